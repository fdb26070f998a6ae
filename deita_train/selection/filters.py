"""`select.filters`: boolean expressions (see `expressions/`) applied in order before the strategy.

A row is kept when every filter is true for it. A row with a null in a column a filter reads fails
that filter and is counted as `null`; a filter that gives anything but true/false is an error. Each
filter is computed on Arrow columns for the rows the earlier filters kept, all at once.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from datasets import Dataset

from deita_train.data.arrow_rows import arrow_table
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


def apply_filters(dataset: Dataset, filters: list[str],
                  key: str = "select.filters") -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray]:
    """Rows of `dataset` passing all filters (ascending positions), one count record per filter, and per row the
    index of the first filter it failed (-1: it passed them all)."""
    compiled = compile_filters(filters, key)
    for expression in compiled:
        expression.check_columns(dataset.column_names)
    positions = np.arange(len(dataset))
    failed_at = np.full(len(dataset), -1, dtype=np.int32)
    steps = []
    for index, expression in enumerate(compiled):
        started = time.perf_counter()
        keep, nulls = passing(dataset, expression, positions)
        steps.append({
            "filter": expression.text,
            "kept": int(keep.sum()),
            "failed": int(len(keep) - keep.sum() - nulls),
            "null": nulls,
            "seconds": round(time.perf_counter() - started, 3),
        })
        failed_at[positions[~keep]] = index
        positions = positions[keep]
    return positions, steps, failed_at


def passing(dataset: Dataset, expression: Expression, positions: np.ndarray) -> tuple[np.ndarray, int]:
    """Which of the rows at `positions` pass `expression` (a NULL row does not), and how many are NULL."""
    table = arrow_table(dataset, expression.columns | {"id"})
    if len(positions) < len(dataset):
        table = table.take(positions)
    result = expression.evaluate_columns(table, labels=positions)
    keep = np.zeros(len(positions), dtype=bool)
    value = result.value
    if value is not None:
        if value.kind != "bool" or value.offsets is not None:
            raise RecipeError([f"{expression.key}: {expression.text!r} gives {value.item(0)!r}, not true/false"])
        keep[~result.null] = value.data
    return keep, int(result.null.sum())
