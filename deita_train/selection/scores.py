"""Per-sample scores from score columns: a float column as is, a per-turn list summed over turns."""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.registry import did_you_mean


def sample_scores(scored: Dataset, column: str) -> np.ndarray:
    """One float per row; NaN where the row has no score (null)."""
    if column not in scored.column_names:
        raise RecipeError([f"select.score: no column {column!r}{did_you_mean(column, scored.column_names)}"])
    return np.array(
        [np.nan if v is None else float(np.sum(v)) for v in scored[column]],
        dtype=np.float64,
    )
