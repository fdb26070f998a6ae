"""`facility_location` and `kcenter` against plain brute-force greedy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from deita_train.selection.facility import FacilityLocationConfig, FacilityLocationStrategy, lazy_greedy
from deita_train.selection.kcenter import KCenterConfig, KCenterStrategy, farthest_first


def plain_facility_greedy(points: np.ndarray, budget: int) -> list[int]:
    x = points.astype(np.float64)
    distance = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    sim = np.exp(-distance / x.shape[1])
    covered, picks = np.zeros(len(x)), []
    for _ in range(budget):
        gains = np.maximum(sim - covered[:, None], 0).sum(0)
        gains[picks] = -1
        j = int(np.argmax(gains))
        picks.append(j)
        covered = np.maximum(covered, sim[:, j])
    return picks


@pytest.mark.parametrize("max_matrix_rows", [0, 10_000])  # streamed rows vs the cached matrix
@pytest.mark.parametrize("seed", range(3))
def test_lazy_greedy_equals_plain_greedy(seed, max_matrix_rows):
    rng = np.random.default_rng(seed)
    points = (rng.normal(size=(150, 8)) * rng.uniform(0.1, 3, size=(150, 1))).astype(np.float32)
    picks = lazy_greedy(torch.from_numpy(points), 20, max_matrix_rows, block_size=32)
    assert picks == plain_facility_greedy(points, 20)


def test_facility_location_preselects_top_fraction_of_pool_below_one():
    rng = np.random.default_rng(0)
    ifd = [[0.9], [1.0], [0.8], None, [0.7], [0.95], [0.2], [0.6], [0.5], [0.4]]
    data = Dataset.from_dict({"ifd": ifd, "embedding": rng.normal(size=(10, 4)).tolist()})
    picks = FacilityLocationStrategy(FacilityLocationConfig(budget=2, preselect=0.3), seed=0).select(data)
    assert len(picks) == 2 and set(picks) <= {5, 0, 2}  # top 3 of the pool among ifd < 1


def plain_kcenter(points: np.ndarray, first: int, budget: int) -> list[int]:
    x = points.astype(np.float64)
    picks = [first]
    while len(picks) < budget:
        d = np.min(((x[:, None, :] - x[None, picks, :]) ** 2).sum(-1), axis=1)
        d[picks] = -1
        picks.append(int(np.argmax(d)))
    return picks


def test_kcenter_equals_plain_loop_and_starts_at_best_score():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(200, 6)).astype(np.float32)
    assert farthest_first(torch.from_numpy(points), 0, 15) == plain_kcenter(points, 0, 15)
    data = Dataset.from_dict({"score": rng.normal(size=200).tolist(), "embedding": points.tolist()})
    best = int(np.argmax(data["score"]))
    picks = KCenterStrategy(KCenterConfig(budget=15, score="score"), seed=0).select(data)
    assert picks == plain_kcenter(points, best, 15)
