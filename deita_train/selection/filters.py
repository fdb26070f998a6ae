"""`select.filters`: boolean expressions (see `expressions.py`) applied in order before the strategy.

A row is kept when every filter is true for it. A row with a null in a column a filter reads fails
that filter and is counted as `null`; a filter that gives anything but true/false is an error.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.expressions import NULL, Expression


def compile_filters(filters: list[str]) -> list[Expression]:
    """Compile every filter, collecting all problems into one RecipeError."""
    compiled, problems = [], []
    for i, text in enumerate(filters):
        try:
            compiled.append(Expression(text, f"select.filters.{i}"))
        except RecipeError as error:
            problems += error.problems
    if problems:
        raise RecipeError(problems)
    return compiled


def apply_filters(dataset: Dataset, filters: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows of `dataset` passing all filters (ascending positions), and one count record per filter."""
    compiled = compile_filters(filters)
    for expression in compiled:
        expression.check_columns(dataset.column_names)
    positions = np.arange(len(dataset))
    steps = []
    for expression in compiled:
        started = time.perf_counter()
        rows = dataset.select_columns(sorted(expression.columns | ({"id"} & set(dataset.column_names))))
        rows = rows.select(positions)
        keep = np.zeros(len(positions), dtype=bool)
        nulls = 0
        for i, row in enumerate(rows):
            value = expression.evaluate(row)
            if value is NULL:
                nulls += 1
            elif isinstance(value, bool):
                keep[i] = value
            else:
                raise RecipeError([f"{expression.key}: {expression.text!r} gives {value!r}, not true/false"])
        steps.append({
            "filter": expression.text,
            "kept": int(keep.sum()),
            "failed": int(len(keep) - keep.sum() - nulls),
            "null": nulls,
            "seconds": round(time.perf_counter() - started, 3),
        })
        positions = positions[keep]
    return positions, steps
