"""Atomic writes: a reader sees the old output or the new one, never half of one.

Everything written here is created the ordinary way, so its mode follows the process umask (0644 files and 0755
folders under umask 022), unlike `tempfile`'s private 0600/0700.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from datasets import Dataset, load_from_disk


def temporary_sibling(path: Path, tag: str = "") -> Path:
    """An unused hidden name beside `path`, for staging what will be renamed onto it."""
    return path.with_name(f".{path.name}.{tag}{secrets.token_hex(6)}")


@contextmanager
def atomic_file(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A new sibling file open for writing, renamed onto `path` when the block succeeds and removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(path)
    try:
        with open(staging, "xb" if binary else "x", encoding=None if binary else "utf-8") as handle:
            yield handle
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON through a temporary file renamed into place."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write `text` through a temporary file renamed into place."""
    with atomic_file(path) as handle:
        handle.write(text)


def save_dataset(dataset: Dataset, path: Path) -> None:
    """`dataset.save_to_disk` into a sibling temporary folder, then swap it into `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(path)
    staging.mkdir()
    try:
        dataset.save_to_disk(str(staging))
        if path.exists():
            retired = temporary_sibling(path, "old.")
            os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_dataset_dir(path: Path) -> Dataset:
    """A dataset `save_dataset` wrote, loaded into memory: its `.map`/`.filter` results (TRL tokenizing it, say)
    then stay in memory instead of landing as `cache-*.arrow` files in the published folder, beside the
    memory-mapped files `datasets` would otherwise cache next to."""
    return load_from_disk(str(path), keep_in_memory=True)
