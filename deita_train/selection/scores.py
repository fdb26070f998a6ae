"""Per-sample scores and embedding matrices read from a scored dataset.

A score is an expression over columns (see `expressions.py`): a bare column name, or e.g.
`complexity * quality`. A per-turn list result is summed over turns (Deita's `sum_t c_t * q_t`,
METHODS.md section 2); a null in a referenced column gives NaN, which strategies treat as unscored.
"""

from __future__ import annotations

import ast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.registry import did_you_mean
from deita_train.selection.expressions import NULL, Expression


def sample_scores(scored: Dataset, expression: str, key: str = "select.score") -> np.ndarray:
    """One float64 per row; NaN where the row has no score (a null in a referenced column)."""
    compiled = Expression(expression, key)
    compiled.check_columns(scored.column_names)
    if isinstance(compiled.tree, ast.Name):
        column = arrow_column(scored, compiled.tree.id)
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            # fast path: a plain numeric column straight from Arrow, nulls as NaN
            return column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    rows = scored.select_columns(sorted(compiled.columns))
    values = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        value = compiled.evaluate(row)
        if value is NULL:
            values[i] = np.nan
        elif isinstance(value, list):
            values[i] = float(np.sum(value))
        elif isinstance(value, bool | int | float):
            values[i] = float(value)
        else:
            raise RecipeError([f"{key}: {expression!r} gives a {type(value).__name__}, not a number (row {i})"])
    return values


def arrow_column(dataset: Dataset, column: str) -> pa.Array:
    """`column` as one Arrow array, in the dataset's row order (indices mappings applied)."""
    if column not in dataset.column_names:
        raise RecipeError([f"select: no column {column!r}{did_you_mean(column, dataset.column_names)}"])
    table = dataset.select_columns([column]).with_format("arrow")[:]
    chunked = table.column(column)
    return chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)


def embedding_matrix(dataset: Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """`(vectors, valid)`: float32 rows (n_valid, D) for the rows whose `column` is not null, and the row mask.

    Read from Arrow without Python lists; every non-null vector must have the same length.
    """
    array = arrow_column(dataset, column)
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)):
        raise RecipeError([f"select.embedding: column {column!r} is {array.type}, not a vector column"])
    valid = pc.invert(array.is_null()).to_numpy(zero_copy_only=False)
    present = array.filter(pa.array(valid))
    lengths = pc.list_value_length(present).to_numpy(zero_copy_only=False)
    if len(present) and (lengths.min() != lengths.max() or lengths.min() == 0):
        raise RecipeError([f"select.embedding: column {column!r} holds vectors of lengths "
                           f"{int(lengths.min())}..{int(lengths.max())}; all must be the same"])
    width = int(lengths[0]) if len(present) else 0
    flat = present.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    if not flat.flags.writeable:  # Arrow-backed memory: torch needs a writable buffer
        flat = flat.copy()
    if np.isnan(flat).any():
        raise RecipeError([f"select.embedding: column {column!r} has NaN inside a vector"])
    return flat.reshape(len(present), width), valid
