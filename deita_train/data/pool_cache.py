"""The cache of canonical sources, shared by every command and process:
`<datasets cache>/deita_train/pools/<fingerprint>/` (the `datasets` cache is `HF_DATASETS_CACHE`, by default
`~/.cache/huggingface/datasets`) holds `dataset/` (written by `storage.save_dataset`, atomic; loaded memory-mapped)
and `source.json` (its SourceReport and row unit), written last: an entry is complete once `source.json` exists.

The fingerprint hashes what the canonical rows depend on: the source's path as given and its file's identity
(`fingerprints.source_identity`: size, sampled hash, modification time; a hub id: id, configuration, split), its
options, the seed when it draws rows, preference or not, and `CODE_VERSION`. A lock per entry lets one process
build a missing entry while the others (of an `accelerate launch`, or other commands) wait for it and load it.
Entries are never evicted: delete the folder to reclaim its space.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import datasets.config
from datasets import Dataset, load_from_disk
from filelock import FileLock

from deita_train.data.config import SourceConfig
from deita_train.data.progress import WATCHED_ROWS, progress_bars
from deita_train.data.report import SourceReport
from deita_train.fingerprints import digest, source_identity
from deita_train.storage import save_dataset, write_json

CODE_VERSION = 1  # bump when what a source's canonical rows hold changes
OPTIONS = ("format", "split", "name", "limit", "sample", "fraction", "on_error")


@dataclass
class CachedSource:
    """One source's canonical rows (memory-mapped), its report, and the unit of its `source_row` numbers."""

    dataset: Dataset
    report: SourceReport
    unit: str


def pools_root() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "deita_train" / "pools"


def source_fingerprint(source: SourceConfig, seed: int, preference: bool) -> str:
    drawn = source.sample is not None or source.fraction is not None
    return digest({
        "code": CODE_VERSION, "datasets": datasets.__version__, "path": source.path,
        "identity": source_identity(source.path, source.split, source.name),
        "options": {name: getattr(source, name) for name in OPTIONS},
        "seed": seed if drawn else None, "preference": preference,
    })


def load_entry(fingerprint: str) -> CachedSource | None:
    """The cached source, or None when it is not (or not completely) there."""
    folder = pools_root() / fingerprint
    try:
        saved = json.loads((folder / "source.json").read_text(encoding="utf-8"))
        dataset = load_from_disk(str(folder / "dataset")) if saved["rows"] else Dataset.from_dict({})
    except FileNotFoundError:
        return None
    return CachedSource(dataset, SourceReport(**saved["report"]), saved["unit"])


def store_entry(fingerprint: str, dataset: Dataset, report: SourceReport, unit: str) -> None:
    folder = pools_root() / fingerprint
    if len(dataset):  # a source whose every record was skipped keeps its report alone
        with progress_bars(len(dataset) >= WATCHED_ROWS):
            save_dataset(dataset, folder / "dataset")
    write_json(folder / "source.json", {"report": vars(report), "unit": unit, "rows": len(dataset)})


@contextmanager
def entry_lock(fingerprint: str) -> Iterator[None]:
    """Held while one process builds the entry; the others wait here."""
    pools_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(pools_root() / f"{fingerprint}.lock")):
        yield


@contextmanager
def build_folder() -> Iterator[Path]:
    """A scratch folder beside the entries (builder caches, intermediate Arrow files), removed afterwards."""
    pools_root().mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".build-", dir=pools_root()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
