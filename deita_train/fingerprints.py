"""Identities of what a stage's output depends on: configs, files, models. Two equal fingerprints mean the same
inputs; what is read to compute one stays small (a weight or data file: its size and the hash of its first and last
MiB, never the whole file)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

SAMPLE_BYTES = 1 << 20  # large files are identified by size + hashes of their first and last MiB, not read whole
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def plain(value: Any) -> Any:
    """`value` with dataclasses turned into dicts (every field, defaults included) and paths into strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest(data: Any) -> str:
    """sha256 of `data` as canonical JSON."""
    return hashlib.sha256(json.dumps(plain(data), sort_keys=True, default=str).encode()).hexdigest()


def file_identity(path: Path, sampled: bool = False) -> list[Any]:
    """Small files: their size and hash. Large ones, when `sampled`: size and the hash of the first and last MiB."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if not sampled or size <= 2 * SAMPLE_BYTES:
            return [size, hashlib.sha256(handle.read()).hexdigest()]
        head = handle.read(SAMPLE_BYTES)
        handle.seek(size - SAMPLE_BYTES)
        return [size, hashlib.sha256(head + handle.read()).hexdigest()]


def model_identity(name: str) -> Any:
    """A local model folder: its files' identities (weights sampled); a hub id: the id (pin a revision by using a
    local copy)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return name
    return {str(p.relative_to(folder)): file_identity(p, sampled=p.suffix in WEIGHT_SUFFIXES)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def source_identity(path: str, split: str, name: str | None) -> Any:
    """A local data file: its identity (sampled) and modification time (an edit inside a large file changes it); a
    saved dataset folder: that of each of its files; a hub dataset: its id, configuration and split."""
    local = Path(path).expanduser()
    if local.is_file():
        return [*file_identity(local, sampled=True), local.stat().st_mtime_ns]
    if local.is_dir():  # a saved `datasets` dataset
        return {str(p.relative_to(local)): source_identity(str(p), split, name)
                for p in sorted(local.rglob("*")) if p.is_file()}
    return [path, name, split]
