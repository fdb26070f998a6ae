"""Reading sources (local json/jsonl/parquet, optionally .gz, or hub ids) into canonical datasets.

Every bad record is either raised (naming file, line or row, and the problem) or, with
`on_error: skip`, counted and listed in the returned `DataReport`. Nothing is dropped silently.
Every row keeps where it came from: `source_file` (a file's name, or `hub id:split`) and
`source_row` (the `line` or `record`/`row` number of the error messages).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from deita_train.data.checks import missing_file, option_problems
from deita_train.data.config import SourceConfig
from deita_train.data.conversation import RecordError
from deita_train.data.formats import adapt, original_fields
from deita_train.errors import UserError

RE_ENCODE = "re-encode the file as UTF-8 (e.g. `iconv -f <its encoding> -t utf-8`)"
SKIPS_SHOWN = 5


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


class Raw(NamedTuple):
    """One raw record (a `RecordError` when it could not be read) and its position: a 1-based `line` (JSONL),
    or a 0-based `record` (.json) or `row` (parquet, hub)."""

    unit: str
    number: int
    record: Any

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


def read_raw(path: str, source: SourceConfig) -> list[Raw]:
    """Every record of a local file or hub dataset; a local-looking path that does not exist never goes to the hub."""
    local = Path(path).expanduser()
    if local.exists():
        raws, empty = read_local(path, local, source.on_error), "the file is empty"
    elif problem := missing_file(path):
        raise DataError(problem)
    else:
        raws, empty = read_hub(path, source), f"split {source.split!r} has no rows"
    if not raws:
        raise DataError(f"{path}: no records ({empty})")
    return raws


def read_local(path: str, local: Path, on_error: str) -> list[Raw]:
    """The records of a local .jsonl, .json or .parquet file (optionally .gz)."""
    if local.is_dir():
        raise DataError(f"{path}: is a directory; point the source at a .json, .jsonl or .parquet file")
    name = local.name.removesuffix(".gz")
    opener = gzip.open if local.name.endswith(".gz") else open
    with opener(local, "rb") as handle:
        if name.endswith(".jsonl"):
            return read_jsonl(handle)
        if name.endswith(".json"):
            return read_json(path, handle.read(), on_error)
        if name.endswith(".parquet"):
            return [Raw("row", i, r) for i, r in enumerate(pq.read_table(handle).to_pylist())]
    raise DataError(f"{path}: unsupported file type; use .json, .jsonl or .parquet (optionally .gz)")


def utf8_position(data: bytes, start: int, offset: int = 0) -> str:
    """The byte at `data[start]`, its 1-based column on its line, and its offset in the file."""
    column = start - data.rfind(b"\n", 0, start)
    return f"byte 0x{data[start]:02x} at column {column} (byte offset {offset + start})"


def read_jsonl(handle) -> list[Raw]:
    """One record per non-blank line, each line decoded on its own so that a bad line is one bad record."""
    raws, offset = [], 0
    for number, data in enumerate(handle, start=1):
        if data.strip():
            raws.append(Raw("line", number, line_record(data, offset)))
        offset += len(data)
    return raws


def line_record(data: bytes, offset: int) -> Any:
    """One JSONL line's record, or a RecordError saying why it cannot be read (`offset`: the line's start)."""
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        return RecordError(f"not UTF-8: {utf8_position(data, error.start, offset)}; {RE_ENCODE}")
    except json.JSONDecodeError as error:
        return RecordError(f"not valid JSON: {error.msg} at column {error.colno}")


def read_json(path: str, data: bytes, on_error: str) -> list[Raw]:
    """A .json list of records. Bytes that are not UTF-8 stop the run, or (`on_error: skip`) mark their records."""
    if not data.strip():
        return []
    try:
        text, foreign = data.decode("utf-8-sig"), False
    except UnicodeDecodeError as error:
        if on_error == "raise":
            line = data.count(b"\n", 0, error.start) + 1
            raise DataError(f"{path}: not UTF-8 at line {line}: {utf8_position(data, error.start)}; {RE_ENCODE}, "
                            "or set on_error: skip to skip the records holding such bytes") from None
        text, foreign = data.decode("utf-8-sig", errors="surrogateescape"), True
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON at line {error.lineno} column {error.colno}: {error.msg}; "
                        "a file of one record per line should be named .jsonl") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: a .json source must hold a list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{path}: no records (the file holds an empty list)")
    return [Raw("record", i, foreign_byte_error(r) if foreign else r) for i, r in enumerate(records)]


def foreign_byte_error(record: Any) -> Any:
    """`record`, or a RecordError when it holds a byte that was not UTF-8 (kept as a lone surrogate)."""
    text = json.dumps(record, ensure_ascii=False)
    byte = next((ord(ch) - 0xDC00 for ch in text if "\udc80" <= ch <= "\udcff"), None)
    return record if byte is None else RecordError(f"not UTF-8: holds the byte 0x{byte:02x}; {RE_ENCODE}")


def read_hub(path: str, source: SourceConfig) -> list[Raw]:
    """Rows of a hub dataset through `datasets.load_dataset`."""
    from datasets import load_dataset

    return [Raw("row", i, r) for i, r in enumerate(load_dataset(path, source.name, split=source.split))]


def source_file(source: SourceConfig) -> str:
    """What rows record as their `source_file`: a local file's name (never its directory), or `hub id[:name]:split`."""
    if Path(source.path).expanduser().exists():
        return Path(source.path).name
    return ":".join(part for part in (source.path, source.name, source.split) if part)


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


def canonical_rows(
    source: SourceConfig, seed: int, report: SourceReport, preference: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(where, canonical row) for one source, bad records raised or listed per `source.on_error`."""
    raws = read_raw(source.path, source)
    report.read = len(raws)
    positions = choose(len(raws), source, seed)
    if not len(positions):
        raise DataError(f"{source.path}: fraction {source.fraction} of its {len(raws)} records keeps none; "
                        "raise the fraction, or use `sample`")
    provenance = {"source_file": source_file(source)}
    rows = []
    for position in positions:
        raw = raws[position]
        try:
            if isinstance(raw.record, RecordError):
                raise raw.record
            used, fields = adapt(raw.record, "preference" if preference else source.format)
            if preference and used != "preference":
                raise RecordError(f"a preference record needs prompt/chosen/rejected, found a {used} record")
        except RecordError as error:
            if source.on_error == "raise":
                fix = "fix the record, or set on_error: skip"
                raise DataError(f"{source.path} ({raw.where}): {error}; {fix}") from None
            report.skipped.append({"where": raw.where, "problem": str(error)})
            continue
        origin = provenance | {"source_row": raw.number}
        if preference:
            rows.append((raw.where, {k: fields[k] for k in ("prompt", "chosen", "rejected")} | origin))
        else:
            rows.append((raw.where, {"messages": fields["messages"]} | origin | original_fields(raw.record)))
    report.kept = len(rows)
    return rows


def all_skipped(report: DataReport) -> str:
    """Why no row is left when every record taken was skipped: how many, and the first few with their problems."""
    skipped = [(s.path, item) for s in report.sources for item in s.skipped]
    shown = [f"{path + ' ' if i == 0 or path != skipped[i - 1][0] else ''}({item['where']}): {item['problem']}"
             for i, (path, item) in enumerate(skipped[:SKIPS_SHOWN])]
    more = f"; and {len(skipped) - SKIPS_SHOWN} more" if len(skipped) > SKIPS_SHOWN else ""
    return (f"no records left: all {len(skipped)} records taken from {', '.join(s.path for s in report.sources)} "
            f"were skipped (on_error: skip): {'; '.join(shown)}{more}; fix them, or check the source's path and "
            "format")


def type_conflict(rows: list[dict[str, Any]], origins: list[str]) -> str | None:
    """The first field Arrow cannot hold as one column: the first record typed differently from the earlier ones."""
    for name in rows[0]:
        values = [row[name] for row in rows]
        try:
            pa.array(values)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        seen: list[tuple[int, pa.DataType]] = []  # (position, type): the first record of each type met
        for position, value in enumerate(values):
            if value is None:
                continue
            try:
                kind = pa.array([value]).type
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                return (f"field {name!r} of {origins[position]} mixes types inside itself ({error}); "
                        "make its items one type")
            if any(kind == known for _, known in seen):
                continue
            try:
                pa.array([values[i] for i, _ in seen] + [value])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                first, first_kind = seen[0]
                return (f"field {name!r} is {first_kind} in {origins[first]} but {kind} in {origins[position]}; "
                        f"make {name!r} one type in every record, or remove it where it differs")
            seen.append((position, kind))
    return None


def load_sources(sources: list[SourceConfig], seed: int, *, preference: bool = False) -> tuple[Dataset, DataReport]:
    """Concatenate the sources in recipe order; `id` is each row's 0-based position in the result."""
    report = DataReport()
    rows: list[dict[str, Any]] = []
    origins: list[str] = []  # "path (line N)" per row, for the messages below
    for source in sources:
        if problems := option_problems(source, source.path):
            raise DataError("; ".join(problems))
        report.sources.append(SourceReport(path=source.path))
        for where, row in canonical_rows(source, seed, report.sources[-1], preference):
            rows.append(row)
            origins.append(f"{source.path} ({where})")
    if not rows:
        raise DataError(all_skipped(report))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for position, row in enumerate(rows):
        row["id"] = position
        for key in columns:
            row.setdefault(key, None)
    try:
        dataset = Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(type_conflict(rows, origins) or f"the sources' fields cannot form one table ({error}); "
                        "make each field one type in every record") from None
    ordered = ["id", *(c for c in dataset.column_names if c != "id")]
    return dataset.select_columns(ordered), report
