"""Atomic writes: a reader sees the old output or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from datasets import Dataset


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON through a temporary file renamed into place."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write `text` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def save_dataset(dataset: Dataset, path: Path) -> None:
    """`dataset.save_to_disk` into a sibling temporary folder, then swap it into `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    dataset.save_to_disk(str(staging))
    if path.exists():
        retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
        os.replace(path, retired / path.name)
        os.replace(staging, path)
        shutil.rmtree(retired)
    else:
        os.replace(staging, path)
