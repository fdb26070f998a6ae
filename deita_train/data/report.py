"""What loading the sources tells its caller: `DataError` for what stops the run, and a `DataReport` of per-source
counts and every skipped record (its `where`, e.g. `line 4`, and its problem)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deita_train.errors import UserError

SKIPS_SHOWN = 5  # skipped records quoted in the message when every record was skipped


class DataError(UserError, ValueError):
    """A source or record that cannot be read; the message names where and what to do."""


@dataclass
class SourceReport:
    path: str
    read: int = 0
    kept: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"where": "line 4", "problem": ...}


@dataclass
class DataReport:
    """Per-source counts and every skipped record, for the run's report."""

    sources: list[SourceReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"sources": [vars(s) for s in self.sources]}


def all_skipped(report: DataReport) -> str:
    """Why no row is left when every record taken was skipped: how many, and the first few with their problems."""
    skipped = [(s.path, item) for s in report.sources for item in s.skipped]
    shown = [f"{path + ' ' if i == 0 or path != skipped[i - 1][0] else ''}({item['where']}): {item['problem']}"
             for i, (path, item) in enumerate(skipped[:SKIPS_SHOWN])]
    more = f"; and {len(skipped) - SKIPS_SHOWN} more" if len(skipped) > SKIPS_SHOWN else ""
    return (f"no records left: all {len(skipped)} records taken from {', '.join(s.path for s in report.sources)} "
            f"were skipped (on_error: skip): {'; '.join(shown)}{more}; fix them, or check the source's path and "
            "format")


def type_conflict(name: str, first: tuple[str, Any], other: tuple[str, Any]) -> str:
    """A field one column cannot hold: (origin, Arrow type) of its first value and of the first value that differs."""
    return (f"field {name!r} is {first[1]} in {first[0]} but {other[1]} in {other[0]}; "
            f"make {name!r} one type in every record, or remove it where it differs")
