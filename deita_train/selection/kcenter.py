"""`kcenter`: greedy k-center (farthest-first traversal, Gonzalez 1985) over an embedding column.

The first center is the highest-scoring row when `score` is given, else the first row with an
embedding; each next center is the row farthest from all centers so far (ties: lower row). Memory is
O(n): one distance row per pick, never an n x n matrix.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset

from deita_train.selection.base import Strategy, register_strategy
from deita_train.selection.config import KCenterConfig
from deita_train.selection.deita import stable_descending, unit_rows
from deita_train.selection.scores import embedding_matrix, sample_scores


@register_strategy("kcenter")
class KCenterStrategy(Strategy):
    """Greedy k-center; see the module docstring."""

    config_class = KCenterConfig

    def select(self, scored: Dataset) -> list[int]:
        vectors, valid = embedding_matrix(scored, self.config.embedding)
        self.unranked = ~valid
        rows = np.flatnonzero(valid)
        if not len(rows):
            return []
        first = 0
        if self.config.score is not None:
            scores = sample_scores(scored, self.config.score)
            ranked = stable_descending(scores[rows])
            if not len(ranked):  # no row has a score to choose the first center: none can be ranked
                self.unranked = ~valid | np.isnan(scores)
                return []
            first = int(ranked[0])
        device = torch.device(self.config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        points = torch.from_numpy(vectors).to(device)
        if self.config.metric == "cosine":
            points = unit_rows(points)
        return rows[farthest_first(points, first, self.config.budget)].tolist()


def farthest_first(points: torch.Tensor, first: int, budget: int) -> list[int]:
    """Positions of `budget` centers (fewer if there are fewer points), starting at `first`."""
    squared_norms = (points * points).sum(1)

    def distances(j: int) -> torch.Tensor:
        squared = squared_norms + squared_norms[j] - 2 * (points @ points[j])
        return squared.clamp_min(0)

    nearest = torch.full((len(points),), float("inf"), dtype=points.dtype, device=points.device)
    picks = [first]
    while len(picks) < min(budget, len(points)):
        nearest = torch.minimum(nearest, distances(picks[-1]))
        nearest[picks[-1]] = -1.0  # a center is never picked again
        picks.append(int(torch.argmax(nearest)))
    return picks
