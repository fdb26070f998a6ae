"""Which columns of a scored pool are scores or embeddings, and one float per row of a score, read from the schema
and the numeric columns only (a text column of a 10M-row pool is never read whole: it would overflow Arrow's 2 GB
string offsets).

Numeric columns are used as they are; per-turn score lists as their per-sample sum (as strategies rank them). A
list-of-numbers column is an embedding when every non-null row has the same length, at least `EMBEDDING_MIN_SIZE`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

EMBEDDING_MIN_SIZE = 16


def numeric_columns(pool: Dataset) -> list[str]:
    """Columns of numbers or lists of numbers (`id` aside), from the schema: text columns are never read."""
    return [field.name for field in pool.data.schema if field.name != "id" and numeric(field.type)]


def numeric(kind: pa.DataType) -> bool:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def column_kind(array: pa.Array) -> str | None:
    """`score` (numeric, or list of numbers of varying length), `embedding`, or None (not plotted)."""
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "score"
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) and (
        pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
    ):
        lengths = pc.list_value_length(array.drop_null()).to_numpy(zero_copy_only=False)
        if len(lengths) and lengths.min() == lengths.max() and lengths.min() >= EMBEDDING_MIN_SIZE:
            return "embedding"
        return "score"
    return None


def per_sample(array: pa.Array) -> np.ndarray:
    """float64 per row: the value, or the sum of a per-turn list; NaN for null."""
    if not pa.types.is_nested(array.type):
        return array.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(array).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    sums = np.zeros(len(array), dtype=np.float64)
    filled = lengths > 0
    if filled.any():  # consecutive non-empty rows tile `flat`, so each sum runs to the next one's start
        sums[filled] = np.add.reduceat(flat, starts[filled])
    sums[array.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return sums


def column_array(pool: Dataset, name: str) -> pa.Array:
    """One column of the pool as a single Arrow array (numeric columns only: see the module docstring)."""
    return pool.data.column(name).combine_chunks()
