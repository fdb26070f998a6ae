"""Range checks the stages' config classes share, each returning problems that start with the option's key."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def at_least_one(config: Any, key: str, names: tuple[str, ...]) -> list[str]:
    """`key.name: must be at least 1, got N` for each named option the config has, is set, and is below 1."""
    present = {f.name for f in fields(config)}
    values = {name: getattr(config, name) for name in names if name in present}
    return [f"{key}.{name}: must be at least 1, got {value}" for name, value in values.items()
            if value is not None and value < 1]


def in_unit_interval(value: float | None, key: str) -> list[str]:
    """`key: must be in (0, 1], got X` when the value is set and outside (0, 1]."""
    return [f"{key}: must be in (0, 1], got {value}"] if value is not None and not 0 < value <= 1 else []
