"""Per-sample scores and embedding matrices read from a scored dataset.

A score is an expression over columns (see `expressions/`): a bare column name, or e.g.
`complexity * quality`. A per-turn list result is summed over turns (Deita's `sum_t c_t * q_t`,
docs/methods.md, Deita scorers); a null in a referenced column gives NaN, which strategies treat as unscored.
Both are computed on Arrow columns, a part of the dataset at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from deita_train.data.arrow_rows import arrow_table, parts
from deita_train.recipe.errors import RecipeError
from deita_train.registry import did_you_mean
from deita_train.selection.expressions import NUMBERS, Expression


def sample_scores(scored: Dataset, expression: str, key: str = "select.score") -> np.ndarray:
    """One float64 per row; NaN where the row has no score (a null in a referenced column)."""
    scores = np.empty(len(scored))
    for start, part in score_parts(scored, expression, key):
        scores[start:start + len(part)] = part
    return scores


def score_parts(scored: Dataset, expression: str, key: str = "select.score") -> Iterator[tuple[int, np.ndarray]]:
    """`sample_scores` a part of the dataset at a time (`parts`), each with the position of its first row: a pass
    over a pool of any size holds one part's columns and scores."""
    compiled = Expression(expression, key)
    compiled.check_columns(scored.column_names)
    for start, table in parts(scored, compiled.columns | {"id"}):
        result = compiled.evaluate_columns(table, labels=start + np.arange(table.num_rows), total=True)
        scores = np.full(table.num_rows, np.nan)
        value = result.value
        if value is not None:
            if value.kind not in NUMBERS:
                row = start + int(np.argmin(result.null))
                raise RecipeError([f"{key}: {expression!r} gives a {type(value.item(0)).__name__}, not a number "
                                   f"(row {row})"])
            scores[~result.null] = value.data
        yield start, scores


def arrow_column(dataset: Dataset, column: str) -> pa.Array:
    """`column` as one Arrow array, in the dataset's row order (indices mappings applied)."""
    if column not in dataset.column_names:
        raise RecipeError([f"select: no column {column!r}{did_you_mean(column, dataset.column_names)}"])
    return arrow_table(dataset, {column}).column(column).combine_chunks()


def embedding_matrix(dataset: Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """`(vectors, valid)`: float32 rows (n_valid, D) for the rows whose `column` is not null, and the row mask.

    Read from Arrow without Python lists; every non-null vector must have the same length. The only copy is the
    one into the result (writable memory, which torch needs): each chunk's values are read in place.
    """
    if column not in dataset.column_names:
        raise RecipeError([f"select: no column {column!r}{did_you_mean(column, dataset.column_names)}"])
    chunks = arrow_table(dataset, {column}).column(column)
    kind = chunks.type
    if not ((pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))
            and (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type))):
        raise RecipeError([f"select.embedding: column {column!r} is {kind}, not a vector column"])
    valid = pc.invert(chunks.is_null()).to_numpy(zero_copy_only=False)
    width = vector_width(chunks, valid, column)
    vectors = np.empty((int(valid.sum()), width), dtype=np.float32)
    start = 0
    for chunk in chunks.chunks:  # flatten() skips null rows; a list array without nulls is read without a copy
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        rows = len(values) // width if width else 0
        vectors[start:start + rows] = values.reshape(rows, width)
        start += rows
    if np.isnan(vectors).any():
        raise RecipeError([f"select.embedding: column {column!r} has NaN inside a vector"])
    return vectors, valid


def vector_width(chunks: pa.ChunkedArray, valid: np.ndarray, column: str) -> int:
    """The length of every non-null vector (0 when there is none); a RecipeError when they differ or are empty."""
    if not valid.any():
        return 0
    if pa.types.is_fixed_size_list(chunks.type):
        lengths = np.array([chunks.type.list_size])
    else:
        lengths = pc.list_value_length(chunks).to_numpy(zero_copy_only=False)[valid]
    if lengths.min() != lengths.max() or lengths.min() == 0:
        raise RecipeError([f"select.embedding: column {column!r} holds vectors of lengths "
                           f"{int(lengths.min())}..{int(lengths.max())}; all must be the same"])
    return int(lengths[0])
