"""A .jsonl or .json file the builder could not read, read with the line reader instead: canonicalized record by
record in two passes, both memory-bounded for JSONL (streamed line by line).

1. Check: every record taken is canonicalized; a bad one is raised (naming file and line) or listed in the report
   (`on_error: skip`); each field's Arrow type is followed, so a field typed differently across records is named
   with the first two records that disagree.
2. Write: the good rows go to Arrow through `Dataset.from_generator`, which writes them in batches.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features

from deita_train.data.canonical import FIX, canonical_fields, chosen, column_order, empty_canonical
from deita_train.data.config import SourceConfig
from deita_train.data.conversation import RecordError
from deita_train.data.formats import original_fields
from deita_train.data.line_numbers import record_lines
from deita_train.data.line_reader import Raw, json_records, jsonl_records
from deita_train.data.progress import WATCHED_ROWS, progress_bars
from deita_train.data.reading import source_file
from deita_train.data.report import DataError, SourceReport, type_conflict

SCALAR_TYPES = {str: pa.string(), bool: pa.bool_(), float: pa.float64()}
INT64 = range(-(2**63), 2**63)


def arrow_type(value: Any) -> pa.DataType:
    """The Arrow type pyarrow infers for one value (raises what pyarrow raises when it cannot hold it)."""
    if (kind := SCALAR_TYPES.get(type(value))) is not None:
        return kind
    if type(value) is int and value in INT64:
        return pa.int64()
    return pa.array([value]).type


class FieldTypes:
    """Each field's Arrow type over rows seen in order: one representative value per distinct type, and the fields
    that cannot be one column (the first two records that disagree). Rows are checked a batch at a time: a batch
    whose values Arrow holds as a type already seen needs no value-by-value look."""

    BATCH = 1000

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[str, pa.DataType, Any]]] = {}  # field -> (origin, type, value)
        self.conflicts: dict[str, str] = {}
        self.rows: list[tuple[dict[str, Any], str]] = []  # (row, origin) not checked yet

    def add(self, row: dict[str, Any], origin: str) -> None:
        for name in row:
            self.seen.setdefault(name, [])
        self.rows.append((row, origin))
        if len(self.rows) >= self.BATCH:
            self.check()

    def check(self) -> None:
        """Check the rows added since the last check."""
        for name, seen in self.seen.items():
            if name in self.conflicts:
                continue
            values = [row.get(name) for row, _ in self.rows]
            try:
                kind = pa.array(values).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                kind = None
            if kind is not None and (pa.types.is_null(kind) or any(kind == known for _, known, _ in seen)):
                continue
            for value, (_, origin) in zip(values, self.rows, strict=True):
                if value is not None and not self.add_value(name, value, origin):
                    break
        self.rows = []

    def add_value(self, name: str, value: Any, origin: str) -> bool:
        """Follow one value of field `name`; False when it makes the field a conflict."""
        seen = self.seen[name]
        try:
            kind = arrow_type(value)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
            self.conflicts[name] = (f"field {name!r} of {origin} mixes types inside itself ({error}); "
                                    "make its items one type")
            return False
        if any(kind == known for _, known, _ in seen):
            return True
        try:
            pa.array([value for *_, value in seen] + [value])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            self.conflicts[name] = type_conflict(name, seen[0][:2], (origin, kind))
            return False
        seen.append((origin, kind, value))
        return True

    def conflict(self) -> str | None:
        """The first field (in the order fields were met) that cannot be one column."""
        self.check()
        return next((self.conflicts[name] for name in self.seen if name in self.conflicts), None)

    def features(self, preference: bool) -> Features:
        """Every field's type: the one Arrow infers from the representatives together (int and float: double)."""
        types = {name: pa.array([value for *_, value in seen]).type if seen else pa.null()
                 for name, seen in self.seen.items()}
        order = column_order(list(types), preference)
        return Features.from_arrow_schema(pa.schema([(name, types[name]) for name in order]))


def canonical_rows(raws: Iterable[Raw], taken: np.ndarray, source: SourceConfig, preference: bool,
                   shown: str) -> Iterator[tuple[Raw, dict[str, Any] | RecordError]]:
    """(raw, its canonical row or the RecordError saying why it has none) for every record taken."""
    for position, raw in enumerate(raws):
        if not taken[position]:
            continue
        try:
            if isinstance(raw.record, RecordError):
                raise raw.record
            fields = canonical_fields(raw.record, source.format, preference)
        except RecordError as error:
            yield raw, error
            continue
        origin = {"source_file": shown, "source_row": raw.number}
        yield raw, fields | origin | ({} if preference else original_fields(raw.record))


def read_by_lines(local: Path, suffix: str, source: SourceConfig, seed: int, preference: bool,
                  report: SourceReport, build_dir: Path) -> Dataset:
    """The canonical rows of a .jsonl or .json file read with the line reader."""
    raws: Callable[[], Iterable[Raw]]
    if suffix == ".json":
        count, raws = json_records(local, source.path, source.on_error)
    else:
        count, raws = len(record_lines(local)), lambda: jsonl_records(local)
    if not count:
        raise DataError(f"{source.path}: no records (the file is empty)")
    report.read = count
    taken = np.zeros(count, dtype=bool)
    taken[chosen(count, source, seed)] = True
    shown, types = source_file(source), FieldTypes()
    for raw, row in canonical_rows(raws(), taken, source, preference, shown):
        if isinstance(row, RecordError):
            if source.on_error == "raise":
                raise DataError(f"{source.path} ({raw.where}): {row}; {FIX}")
            report.skipped.append({"where": raw.where, "problem": str(row)})
            continue
        types.add(row, f"{source.path} ({raw.where})")
        report.kept += 1
    if conflict := types.conflict():
        raise DataError(conflict)
    if not report.kept:
        return empty_canonical(preference)

    def good_rows() -> Iterator[dict[str, Any]]:
        for _, row in canonical_rows(raws(), taken, source, preference, shown):
            if not isinstance(row, RecordError):
                yield row

    with progress_bars(report.kept >= WATCHED_ROWS):
        return Dataset.from_generator(good_rows, features=types.features(preference),
                                      cache_dir=str(build_dir / "lines"), fingerprint=secrets.token_hex(16))
