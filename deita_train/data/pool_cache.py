"""The cache of canonical sources, shared by every command and process:
`<datasets cache>/deita_train/pools/<fingerprint>/` (the `datasets` cache is `HF_DATASETS_CACHE`, by default
`~/.cache/huggingface/datasets`) holds `arrow/`, the Arrow files the canonical `map` wrote (moved there, not
copied: a 10M-row pool is 8 GB), and `source.json` (its SourceReport, row unit, files and columns), written last:
an entry is complete once `source.json` exists. It loads as those files memory-mapped (`Dataset.from_file`).
`ids/<rows>.arrow` holds the pool's `id` column for a pool of that many rows (0 .. rows - 1), memory-mapped too.

The fingerprint hashes what the canonical rows depend on: the source's path as given and its file's identity
(`fingerprints.source_identity`: size, sampled hash, modification time; a hub id: id, configuration, split), its
options, the seed when it draws rows, preference or not, and `CODE_VERSION`. A lock per entry lets one process
build a missing entry while the others (of an `accelerate launch`, or other commands) wait for it and load it.
Entries are never evicted: delete the folder to reclaim its space.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import datasets.config
import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, Value, concatenate_datasets
from datasets.arrow_writer import ArrowWriter
from datasets.table import ConcatenationTable, MemoryMappedTable
from filelock import FileLock

from deita_train.data.config import SourceConfig
from deita_train.data.reading import BATCH_ROWS
from deita_train.data.report import SourceReport
from deita_train.fingerprints import digest, source_identity
from deita_train.storage import temporary_sibling, write_json

CODE_VERSION = 2  # bump when what a source's canonical rows hold changes
COLUMN_SUBSETS = ("drop", "remove_column", "select", "replace_schema_metadata")  # replays keeping the rows
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
    except FileNotFoundError:
        return None
    if not saved["rows"]:
        return CachedSource(Dataset.from_dict({}), SourceReport(**saved["report"]), saved["unit"])
    parts = [Dataset.from_file(str(folder / "arrow" / name)) for name in saved["files"]]
    dataset = (concatenate_datasets(parts) if len(parts) > 1 else parts[0]).select_columns(saved["columns"])
    return CachedSource(dataset, SourceReport(**saved["report"]), saved["unit"])


def store_entry(fingerprint: str, dataset: Dataset, report: SourceReport, unit: str, build_dir: Path) -> None:
    """Move the Arrow files holding `dataset` (built under `build_dir`) into the entry, then write `source.json`."""
    folder = pools_root() / fingerprint
    names = []
    if len(dataset):  # a source whose every record was skipped keeps its report alone
        (folder / "arrow").mkdir(parents=True, exist_ok=True)
        for index, file in enumerate(backing_files(dataset, build_dir)):
            names.append(f"data-{index:05d}.arrow")
            os.replace(file, folder / "arrow" / names[-1])
    write_json(folder / "source.json", {"report": vars(report), "unit": unit, "rows": len(dataset), "files": names,
                                        "columns": dataset.column_names})


def backing_files(dataset: Dataset, build_dir: Path) -> list[Path]:
    """The Arrow files under `build_dir` whose rows, in order, are exactly `dataset`'s (columns it dropped aside). A
    dataset with other rows (an indices mapping, a slice, rows in memory) is written to one there first."""
    tables = dataset.data.blocks if isinstance(dataset.data, ConcatenationTable) else [[dataset.data]]
    whole_files = dataset._indices is None and all(  # datasets has no public accessor for the indices mapping
        len(row) == 1 and isinstance(row[0], MemoryMappedTable) and Path(row[0].path).is_relative_to(build_dir)
        and all(replay[0] in COLUMN_SUBSETS for replay in row[0].replays) for row in tables)
    if whole_files:
        return [Path(row[0].path) for row in tables]
    written = build_dir / "rows.arrow"
    dataset.flatten_indices(cache_file_name=str(written), writer_batch_size=BATCH_ROWS)
    return [written]


def id_column(rows: int) -> Dataset:
    """The one-column dataset `id` = 0 .. rows - 1, memory-mapped from `<pools>/ids/<rows>.arrow` (written once, in
    record batches of BATCH_ROWS): a pool's ids then cost no memory, where a numpy range held 8 bytes a row (80 MB at
    10M rows) in every process for the whole run."""
    path = pools_root() / "ids" / f"{rows}.arrow"
    if not path.is_file():  # identical content whoever writes it: the last rename wins
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = temporary_sibling(path)
        try:
            with ArrowWriter(path=str(staging), features=Features({"id": Value("int64")}),
                             writer_batch_size=BATCH_ROWS) as writer:
                for start in range(0, rows, BATCH_ROWS):
                    writer.write_table(pa.table({"id": np.arange(start, min(start + BATCH_ROWS, rows))}))
                writer.finalize()
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
    return Dataset.from_file(str(path))


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
