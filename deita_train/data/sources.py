"""Reading sources (local json/jsonl/parquet, optionally .gz, or hub ids) into canonical datasets.

Every bad record is either raised (naming file, line or row, and the problem) or, with
`on_error: skip`, counted and listed in the returned `DataReport`. Nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from deita_train.data.conversation import RecordError
from deita_train.data.formats import STRUCTURE_FIELDS, adapt
from deita_train.recipe.schema import SourceConfig

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".json.gz", ".jsonl.gz", ".parquet.gz")
CANONICAL = ("id", "messages", "source")


class DataError(ValueError):
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


def locate_problem(path: str, key: str) -> str | None:
    """A message when `path` looks local but does not exist; hub ids pass."""
    if Path(path).exists():
        return None
    looks_local = path.startswith(("/", "./", "../", "~")) or path.endswith(LOCAL_SUFFIXES)
    if looks_local:
        return f"{key}: file not found: {path} (relative paths are read from the working directory {os.getcwd()})"
    return None


def read_raw(path: str, source: SourceConfig) -> Iterator[tuple[str, Any]]:
    """(where, raw record) pairs; `where` is `line N` or `row N` (1-based lines, 0-based rows)."""
    local = Path(path)
    if not local.exists():
        yield from read_hub(path, source)
        return
    name = local.name.removesuffix(".gz")
    opener = gzip.open if local.name.endswith(".gz") else open
    if name.endswith(".jsonl"):
        with opener(local, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as error:
                    yield f"line {number}", RecordError(f"not valid JSON: {error.msg} at column {error.colno}")
    elif name.endswith(".json"):
        with opener(local, "rt", encoding="utf-8") as handle:
            try:
                records = json.load(handle)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}: not valid JSON at line {error.lineno} column {error.colno}: {error.msg}; "
                                "a file of one record per line should be named .jsonl") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: a .json source must hold a list of records, got {type(records).__name__}")
        yield from ((f"record {i}", r) for i, r in enumerate(records))
    elif name.endswith(".parquet"):
        with opener(local, "rb") as handle:
            table = pq.read_table(handle)
        yield from ((f"row {i}", r) for i, r in enumerate(table.to_pylist()))
    else:
        raise DataError(f"{path}: unsupported file type; use .json, .jsonl or .parquet (optionally .gz)")


def read_hub(path: str, source: SourceConfig) -> Iterator[tuple[str, Any]]:
    """Rows of a hub dataset through `datasets.load_dataset`."""
    from datasets import load_dataset

    dataset = load_dataset(path, source.name, split=source.split)
    yield from ((f"row {i}", r) for i, r in enumerate(dataset))


def choose(count: int, source: SourceConfig, seed: int) -> np.ndarray:
    """Positions kept by `limit` (first N), `sample` (N drawn) or `fraction` (drawn), in original order."""
    if source.limit is not None:
        return np.arange(min(source.limit, count))
    drawn = source.sample if source.sample is not None else None
    if source.fraction is not None:
        drawn = round(count * source.fraction)
    if drawn is None:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[: min(drawn, count)])


def canonical_rows(source: SourceConfig, seed: int, report: SourceReport, preference: bool) -> list[dict[str, Any]]:
    """The canonical rows of one source, bad records raised or listed per `source.on_error`."""
    raw = list(read_raw(source.path, source))
    report.read = len(raw)
    rows = []
    for position in choose(len(raw), source, seed):
        where, record = raw[position]
        try:
            if isinstance(record, RecordError):
                raise record
            used, fields = adapt(record, "preference" if preference else source.format)
            if preference and used != "preference":
                raise RecordError(f"a preference record needs prompt/chosen/rejected, found a {used} record")
        except RecordError as error:
            if source.on_error == "raise":
                raise DataError(f"{source.path} ({where}): {error}; fix the record, or set on_error: skip") from None
            report.skipped.append({"where": where, "problem": str(error)})
            continue
        if preference:
            rows.append({k: fields[k] for k in ("prompt", "chosen", "rejected")} | {"source": source.path})
        else:
            rows.append({"messages": fields["messages"], "source": source.path} | original_fields(record))
    report.kept = len(rows)
    return rows


def original_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Fields kept beside `messages` (scores computed elsewhere, metadata); a source `id` becomes `source_id`."""
    kept = {k: v for k, v in record.items() if k not in STRUCTURE_FIELDS and k not in CANONICAL}
    if "id" in record:
        kept["source_id"] = str(record["id"])
    return kept


def load_sources(sources: list[SourceConfig], seed: int, *, preference: bool = False) -> tuple[Dataset, DataReport]:
    """Concatenate the sources in recipe order; `id` is each row's 0-based position in the result."""
    report = DataReport()
    rows: list[dict[str, Any]] = []
    for source in sources:
        report.sources.append(SourceReport(path=source.path))
        rows += canonical_rows(source, seed, report.sources[-1], preference)
    if not rows:
        raise DataError(f"no records left from {', '.join(s.path for s in sources)}; see the skipped records")
    columns = {key for row in rows for key in row}
    for position, row in enumerate(rows):
        row["id"] = position
        for key in columns - row.keys():
            row[key] = None
    try:
        dataset = Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # a field typed differently across sources
        raise DataError(f"the sources' extra fields have conflicting types ({error}); "
                        "make each field one type across sources") from None
    ordered = ["id", *(c for c in dataset.column_names if c != "id")]
    return dataset.select_columns(ordered), report
