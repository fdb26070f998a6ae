"""`select.filters`: boolean expressions (see `expressions/`) applied in order before the strategy.

A row is kept when every filter is true for it. A row with a null in a column a filter reads fails
that filter and is counted as `null`; a filter that gives anything but true/false is an error. Each
filter is computed on Arrow columns for the rows the earlier filters kept, a part of the pool at a time.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset

from deita_train.data.arrow_rows import parts
from deita_train.recipe.errors import RecipeError
from deita_train.selection.expressions import Expression


def compile_filters(filters: list[str], key: str = "select.filters") -> list[Expression]:
    """Compile every filter (`key`: the recipe key of the list), collecting all problems into one RecipeError."""
    compiled, problems = [], []
    for i, text in enumerate(filters):
        try:
            compiled.append(Expression(text, f"{key}.{i}"))
        except RecipeError as error:
            problems += error.problems
    if problems:
        raise RecipeError(problems)
    return compiled


def apply_filters(dataset: Dataset, filters: list[str], key: str = "select.filters",
                  active: np.ndarray | None = None) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray]:
    """Rows of `dataset` passing all filters (ascending positions), one count record per filter, and per row the
    index of the first filter it failed (-1: it passed them all, or is not `active`). `active` (one flag per row;
    None: all) leaves rows out before the first filter: they are neither counted nor returned.

    The filters read the dataset part by part (`parts`), so a pool of any size holds one part of their columns."""
    compiled = compile_filters(filters, key)
    for expression in compiled:
        expression.check_columns(dataset.column_names)
    failed_at = np.full(len(dataset), -1, dtype=np.int8 if len(compiled) < 128 else np.int32)
    steps = [{"filter": expression.text, **count, "seconds": round(count["seconds"], 3)}
             for expression, count in zip(compiled, filter_counts(dataset, compiled, active, failed_at), strict=True)]
    passed = failed_at < 0 if active is None else (failed_at < 0) & active
    return np.flatnonzero(passed), steps, failed_at


def filter_counts(dataset: Dataset, compiled: list[Expression], active: np.ndarray | None,
                  failed_at: np.ndarray) -> list[dict[str, Any]]:
    """Run the filters over the `active` rows a part at a time, marking in `failed_at` the first each row fails;
    per filter the rows it kept, failed (not counting nulls), found null, and its seconds."""
    counts = [{"kept": 0, "failed": 0, "null": 0, "seconds": 0.0} for _ in compiled]
    if not compiled:
        return counts
    for start, table in parts(dataset, set().union(*(expression.columns for expression in compiled)) | {"id"}):
        rows = np.arange(table.num_rows) if active is None else np.flatnonzero(active[start:start + table.num_rows])
        for index, expression in enumerate(compiled):
            started = time.perf_counter()
            keep, nulls = passing(table, expression, rows, start)
            count = counts[index]
            count["kept"] += int(keep.sum())
            count["failed"] += int(len(keep) - keep.sum() - nulls)
            count["null"] += nulls
            count["seconds"] += time.perf_counter() - started
            failed_at[start + rows[~keep]] = index
            rows = rows[keep]
    return counts


def passing(table: pa.Table, expression: Expression, rows: np.ndarray, start: int) -> tuple[np.ndarray, int]:
    """Which of `rows` of `table` (a part of the dataset beginning at row `start`) pass `expression` (a NULL row does
    not), and how many are NULL."""
    if len(rows) < table.num_rows:
        table = table.take(pa.array(rows))
    result = expression.evaluate_columns(table, labels=start + rows)
    keep = np.zeros(len(rows), dtype=bool)
    value = result.value
    if value is not None:
        if value.kind != "bool" or value.offsets is not None:
            raise RecipeError([f"{expression.key}: {expression.text!r} gives {value.item(0)!r}, not true/false"])
        keep[~result.null] = value.data
    return keep, int(result.null.sum())
