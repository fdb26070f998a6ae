"""Canonicalizing a source's raw rows: the format adapters (`formats.adapt`) run on each row inside a batched
`Dataset.map` (worker processes for large sources), which writes `messages` (or, for preference data, `prompt`,
`chosen` and `rejected`), `source_file`, `source_row` and a `_problem` column (null when the row is fine) instead of
raising inside the map. Then `on_error: raise` raises a DataError naming the first problem's file and line, and
`skip` lists every problem in the SourceReport and drops those rows.

The fields a format turns into messages are removed; the record's other fields stay as columns, untouched (a source
`id` becomes `source_id`). A field that is null in a row counts as absent there (Arrow cannot tell a missing key
from a null, and a file mixing formats has every format's fields as columns).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value

from deita_train.data.config import SourceConfig
from deita_train.data.conversation import RecordError
from deita_train.data.formats import CANONICAL_COLUMNS, STRUCTURE_FIELDS, adapt
from deita_train.data.map_environment import tokenizers_parallelism_kept
from deita_train.data.mapped_pages import arrow_file_mappings, release
from deita_train.data.progress import WATCHED_ROWS, progress_bars
from deita_train.data.reading import BATCH_ROWS, RawSource, source_file
from deita_train.data.report import DataError, SourceReport

MIN_ROWS_FOR_PROCESSES = 50_000  # below this, one process: starting workers would take longer than the work
MAX_PROCESSES = 8
PROBLEM = "_problem"
PAIR = ("prompt", "chosen", "rejected")
MESSAGES = List({"role": Value("string"), "content": Value("string")})
FIX = "fix the record, or set on_error: skip"
RELEASE_EVERY = 8  # batches a process canonicalizes between two hand-backs of its mapped pages
BATCHES = itertools.count()  # batches canonicalized in this process


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


def chosen(count: int, source: SourceConfig, seed: int) -> np.ndarray:
    """`choose`, or a DataError when a fraction keeps no record."""
    positions = choose(count, source, seed)
    if not len(positions):
        raise DataError(f"{source.path}: fraction {source.fraction} of its {count} records keeps none; "
                        "raise the fraction, or use `sample`")
    return positions


def processes_for(rows: int) -> int:
    """Worker processes for a pass over `rows`."""
    return 1 if rows < MIN_ROWS_FOR_PROCESSES else max(1, min(os.cpu_count() or 1, MAX_PROCESSES))


def present(value: Any) -> Any:
    """`value` with the null fields of its objects (at any depth) left out, as if absent."""
    if isinstance(value, dict):
        return {k: present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        return [present(v) for v in value]
    return value


def canonical_fields(record: Any, format_name: str, preference: bool) -> dict[str, Any]:
    """`messages`, or for preference data `prompt`/`chosen`/`rejected`; a RecordError says what is wrong."""
    used, fields = adapt(present(record), "preference" if preference else format_name)
    if preference and used != "preference":
        raise RecordError(f"a preference record needs prompt/chosen/rejected, found a {used} record")
    return {name: fields[name] for name in PAIR} if preference else {"messages": fields["messages"]}


def removed_columns(columns: list[str], preference: bool) -> list[str]:
    """Raw columns that do not stay: the fields formats read, the canonical names (a source `id` becomes
    `source_id`); for preference data, every column."""
    if preference:
        return list(columns)
    return [c for c in columns if c in STRUCTURE_FIELDS or c in CANONICAL_COLUMNS or (c == "source_id" and "id" in
                                                                                       columns)]


def canonical_features(preference: bool, has_id: bool) -> dict[str, Any]:
    """The columns canonicalizing adds, with their types, in pool order."""
    head = dict.fromkeys(PAIR, MESSAGES) if preference else {"messages": MESSAGES}
    return head | {"source_file": Value("string"), "source_row": Value("int64")} | (
        {"source_id": Value("string")} if has_id and not preference else {})


def as_string(feature: Any) -> Any:
    """A kept column's feature, with Arrow's large_string (the csv builder's) as string, like every other source's."""
    return Value("string") if isinstance(feature, Value) and feature.dtype == "large_string" else feature


def column_order(columns: list[str], preference: bool) -> list[str]:
    """The canonical columns first, the record's own fields after, `source_id` last."""
    head = [*PAIR] if preference else ["messages"]
    head += ["source_file", "source_row"]
    tail = ["source_id"] if "source_id" in columns else []
    return head + [c for c in columns if c not in head and c not in tail and c != PROBLEM] + tail


def canonical_batch(batch: Any, indices: list[int], *, format_name: str, preference: bool, source_file: str,
                    base: int, positions: np.ndarray | None, lines: np.ndarray | None,
                    has_id: bool) -> dict[str, list]:
    """The canonical columns of a batch of raw rows; a row that cannot be canonicalized gets its `_problem`. Every
    `RELEASE_EVERY` batches the process hands back the mapped pages it read (`map` workers run this too)."""
    if next(BATCHES) % RELEASE_EVERY == 0:
        release(arrow_file_mappings())
    names = list(batch.keys())
    columns = [batch[name] for name in names]
    out: dict[str, list] = {name: [] for name in canonical_features(preference, has_id)} | {PROBLEM: []}
    added = [name for name in out if name not in ("source_file", "source_row", "source_id", PROBLEM)]
    for index, values in zip(indices, zip(*columns, strict=True), strict=True):
        record = {name: value for name, value in zip(names, values, strict=True) if value is not None}
        try:
            fields, problem = canonical_fields(record, format_name, preference), None
        except RecordError as error:
            fields, problem = dict.fromkeys(added), str(error)
        position = int(positions[index]) if positions is not None else index
        for name in added:
            out[name].append(fields[name])
        out["source_file"].append(source_file)
        out["source_row"].append(int(lines[position]) if lines is not None else position + base)
        if has_id and not preference:
            out["source_id"].append(None if record.get("id") is None else str(record["id"]))
        out[PROBLEM].append(problem)
    return out


def canonicalize(raw: RawSource, source: SourceConfig, seed: int, preference: bool, report: SourceReport,
                 build_dir: Path) -> Dataset:
    """The source's canonical rows, its problems raised or listed in `report` per `source.on_error`."""
    report.read = len(raw.dataset)
    positions = chosen(report.read, source, seed)
    dataset, drawn = raw.dataset, None
    if len(positions) < report.read:
        if source.limit is not None:
            dataset = dataset.select(range(len(positions)))  # contiguous: a slice, no indices mapping
        else:
            dataset, drawn = dataset.select(positions, keep_in_memory=True), positions
    columns = dataset.column_names
    has_id = "id" in columns
    removed = removed_columns(columns, preference)
    kept = {name: as_string(feature) for name, feature in dataset.features.items() if name not in removed}
    features = Features(kept | canonical_features(preference, has_id) | {PROBLEM: Value("string")})
    shown, processes = source_file(source), processes_for(len(dataset))
    with progress_bars(len(dataset) >= WATCHED_ROWS), tokenizers_parallelism_kept():
        canonical = dataset.map(
            canonical_batch, batched=True, batch_size=BATCH_ROWS, writer_batch_size=BATCH_ROWS, with_indices=True,
            remove_columns=removed, features=features,
            num_proc=processes if processes > 1 else None,
            fn_kwargs={"format_name": source.format, "preference": preference, "source_file": shown,
                       "base": raw.base, "positions": drawn, "lines": raw.lines, "has_id": has_id},
            cache_file_name=str(build_dir / "canonical.arrow"), desc=f"Canonicalizing {shown}",
        )
    canonical = drop_problems(canonical, source, raw.unit, report)
    report.kept = len(canonical)
    return canonical.select_columns(column_order(canonical.column_names, preference))


def drop_problems(canonical: Dataset, source: SourceConfig, unit: str, report: SourceReport) -> Dataset:
    """Raise the first problem (`on_error: raise`), or list every one in `report` and drop their rows (`skip`)."""
    problems = canonical.data.column(PROBLEM)
    if problems.null_count < len(problems):
        bad = np.flatnonzero(pc.is_valid(problems).to_numpy(zero_copy_only=False))
        first = int(bad[0])
        if source.on_error == "raise":
            row = canonical.data.column("source_row")[first].as_py()
            raise DataError(f"{source.path} ({unit} {row}): {problems[first].as_py()}; {FIX}")
        rows = pc.take(canonical.data.column("source_row"), pa.array(bad)).to_pylist()
        texts = pc.take(problems, pa.array(bad)).to_pylist()
        report.skipped.extend({"where": f"{unit} {row}", "problem": text} for row, text in zip(rows, texts,
                                                                                                strict=True))
        keep = np.flatnonzero(pc.is_null(problems).to_numpy(zero_copy_only=False))
        canonical = canonical.select(keep, keep_in_memory=True)
    return canonical.remove_columns(PROBLEM)


def empty_canonical(preference: bool) -> Dataset:
    """A source with no row left (every record skipped)."""
    features = Features(canonical_features(preference, has_id=False))
    return Dataset.from_dict({name: [] for name in features}, features=features)
