"""Which columns of a scored dataset are scores, and one number per row for each.

A score column is numeric (`float`/`int`) or a list of numbers with one value per assistant turn (per-turn
scorers, `length`). Embedding vectors are lists too, but of a fixed size that is not the turn count, and
`id` is a row key, not a score. A row's value is what selection ranks (`deita_train.selection.scores`):
the number itself, or a per-turn list summed over turns; NaN where the row is unscored.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, Value

from deita_train.selection.scores import sample_scores

NOT_SCORES = ("id",)
NUMERIC = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")
ROWS_CHECKED = 200  # rows read to tell per-turn lists from vectors


def score_columns(dataset: Dataset) -> list[str]:
    """The score columns of `dataset`, in column order."""
    columns = []
    for name, feature in dataset.features.items():
        if name in NOT_SCORES:
            continue
        if isinstance(feature, Value) and feature.dtype in NUMERIC:
            columns.append(name)
        elif is_numeric_list(feature) and "messages" in dataset.column_names and is_per_turn(dataset, name):
            columns.append(name)
    return columns


def is_numeric_list(feature) -> bool:
    inner = getattr(feature, "feature", None)
    return isinstance(inner, Value) and inner.dtype in NUMERIC and getattr(feature, "length", -1) in (-1, None)


def is_per_turn(dataset: Dataset, column: str) -> bool:
    """Whether every scored row among the first rows has one value per assistant turn."""
    head = dataset.select_columns([column, "messages"]).select(range(min(ROWS_CHECKED, len(dataset))))
    seen = False
    for values, messages in zip(head[column], head["messages"], strict=True):
        if values is None:
            continue
        seen = True
        if len(values) != sum(m["role"] == "assistant" for m in messages):
            return False
    return seen


def row_scores(dataset: Dataset, columns: list[str]) -> dict[str, np.ndarray]:
    """Per column, one float per row of `dataset` (NaN where unscored)."""
    return {column: sample_scores(dataset, column) for column in columns}
