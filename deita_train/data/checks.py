"""Checks of a source's options and path, without reading it: the data stage's part of `deita-train validate`.

Light on purpose (no `datasets` or `torch`): the recipe calls it before any model or data is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from deita_train.data.config import SourceConfig
from deita_train.recipe.ranges import at_least_one, in_unit_interval

DATA_SUFFIXES = tuple(f".{kind}{gz}" for kind in ("json", "jsonl", "parquet", "csv") for gz in ("", ".gz"))


def looks_local(path: str) -> bool:
    """Whether `path` names a local file rather than a hub id (`name` or `namespace/name`)."""
    first = path.split("/", 1)[0]
    return (
        path.startswith((".", "/", "~"))
        or path.count("/") > 1
        or path.lower().endswith(DATA_SUFFIXES)
        or ("/" in path and Path(first).is_dir())
    )


def missing_file(path: str) -> str | None:
    """What is wrong when `path` looks local but does not exist; None when it exists or is a hub id."""
    if Path(path).expanduser().exists() or not looks_local(path):
        return None
    return (f"file not found: {path} (relative paths are read from the working directory {os.getcwd()}); "
            "fix the path, or give a hub dataset id as `name` or `namespace/name`")


def option_problems(source: SourceConfig, key: str) -> list[str]:
    """`limit`, `sample` and `fraction`: each in range, and at most one of them."""
    problems = at_least_one(source, key, ("limit", "sample")) + in_unit_interval(source.fraction, f"{key}.fraction")
    chosen = [name for name in ("limit", "sample", "fraction") if getattr(source, name) is not None]
    if len(chosen) > 1:
        problems.append(f"{key}: set one of limit, sample, fraction, not {' and '.join(chosen)}")
    return problems


def source_problems(source: SourceConfig, key: str, exists: bool = False) -> list[str]:
    """Every problem of one source (`key` is its recipe key, e.g. `pool.0`), each message starting with the key;
    `exists`: the run writes the file before reading it (its path is not checked)."""
    problems = option_problems(source, key)
    if not exists and (missing := missing_file(source.path)):
        problems.append(f"{key}.path: {missing}")
    return problems
