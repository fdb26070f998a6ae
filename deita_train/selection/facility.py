"""`facility_location`: Superfiltering-D, docs/methods.md, IFD (Li et al., ACL 2024).

1. keep rows whose IFD is strictly below `below` (default 1.0; NaN dropped), take the top `preselect`
   fraction of the *whole pool* by IFD, descending;
2. over their embeddings, maximize f(S) = sum_i max_{j in S} sim(i, j) with lazy greedy down to `budget`,
   where sim(i, j) = exp(-||x_i - x_j|| / d) and d is the embedding size (the reference's kernel).

Memory: the n x n similarity matrix is built only when n <= `max_matrix_rows`; above that a
candidate's similarity row is recomputed when lazy greedy needs it (O(n d) each, O(n) memory),
and the initial gains are summed block by block.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
from datasets import Dataset

from deita_train.selection.base import Removed, ScoreNotes, Strategy, register_strategy
from deita_train.selection.config import FacilityLocationConfig
from deita_train.selection.deita import stable_descending
from deita_train.selection.scores import embedding_matrix, sample_scores


@register_strategy("facility_location")
class FacilityLocationStrategy(Strategy):
    """Superfiltering-D: IFD pre-selection, then lazy greedy facility location. `details()`: `score_cut` (the
    scored rows failing the `cut`), `not_preselected` (rows passing it beyond the preselect share), `preselected`."""

    config_class = FacilityLocationConfig
    removals = ("score_cut", "not_preselected")

    def select(self, scored: Dataset) -> list[int]:
        scores = sample_scores(scored, self.config.score)
        vectors, valid = embedding_matrix(scored, self.config.embedding)
        scores = np.where(valid, scores, np.nan)
        ranking = scores
        self.unranked = np.isnan(scores)
        if self.config.below is not None:
            with np.errstate(invalid="ignore"):
                scores = np.where(scores < self.config.below, scores, np.nan)
        passing = stable_descending(scores)
        pool = passing[: int(len(scored) * self.config.preselect)]
        cut = None if self.config.below is None else f"{self.config.score} < {self.config.below}"
        failing = np.flatnonzero(~self.unranked & np.isnan(scores))
        beyond = np.sort(passing[len(pool):])
        self.found = {"score_cut": len(failing), "cut": cut, "not_preselected": len(beyond), "preselected": len(pool)}
        share = f"beyond the top {self.config.preselect:g} of the pool by {self.config.score}"
        self.removed = {"score_cut": Removed(failing, ScoreNotes(ranking, failing, cut)),
                        "not_preselected": Removed(beyond, [f"score {ranking[row]:.6g} {share}" for row in beyond])}
        position = np.cumsum(valid) - 1  # row -> row of `vectors`
        device = torch.device(self.config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        points = torch.from_numpy(vectors[position[pool]]).to(device)
        picks = lazy_greedy(points, self.config.budget, self.config.max_matrix_rows, self.config.block_size)
        return pool[picks].tolist()


def kernel_rows(rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """exp(-||r - p|| / d) for every row r of `rows` against every point p: shape (len(rows), len(points))."""
    squared = (rows * rows).sum(1, keepdim=True) + (points * points).sum(1) - 2 * rows @ points.T
    return torch.exp(-squared.clamp_min(0).sqrt() / points.shape[1])


def lazy_greedy(points: torch.Tensor, budget: int, max_matrix_rows: int, block_size: int) -> list[int]:
    """Greedy maximization of sum_i max_{j in S} sim(i, j); positions in pick order.

    Lazy evaluation (Minoux): gains only shrink as S grows, so a stale gain is an upper bound; the
    top of the heap is re-evaluated, and taken when its fresh gain still beats every other bound.
    Equal gains go to the lower position.
    """
    points = points.double()  # near-equal gains must order the same way however the rows were computed
    n = len(points)
    matrix = kernel_rows(points, points) if n <= max_matrix_rows else None

    def similarities(j: int) -> torch.Tensor:
        return matrix[j] if matrix is not None else kernel_rows(points[j : j + 1], points)[0]

    if matrix is not None:
        gains = matrix.sum(0)
    else:
        gains = torch.cat([kernel_rows(points[s : s + block_size], points).sum(1)
                           for s in range(0, n, block_size)])  # the kernel is symmetric
    heap = [(-float(g), j) for j, g in enumerate(gains.cpu().tolist())]
    heapq.heapify(heap)
    covered = torch.zeros(n, dtype=torch.float64, device=points.device)  # max sim to S; 0 for S empty
    picks: list[int] = []
    while heap and len(picks) < min(budget, n):
        _, j = heapq.heappop(heap)
        row = similarities(j)
        gain = float((row - covered).clamp_min(0).sum())
        if not heap or (-gain, j) <= heap[0]:
            picks.append(j)
            covered = torch.maximum(covered, row)
        else:
            heapq.heappush(heap, (-gain, j))
    return picks
