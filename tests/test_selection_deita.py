"""`deita` (docs/methods.md, Repr Filter): worked cases, and blocked picks == a plain one-at-a-time loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from deita_train.selection.deita import DeitaConfig, DeitaStrategy, repr_filter, stable_descending, unit_rows


def reference_loop(vectors: np.ndarray, scores: np.ndarray, threshold: float, budget: int | None) -> list[int]:
    """docs/methods.md, Repr Filter verbatim: one candidate at a time against the selected set.

    Same dot-product convention as the strategy: float32 unit rows, exact (float64) dot products.
    """
    units = unit_rows(torch.from_numpy(vectors)).double().numpy()
    order = [int(i) for i in np.argsort(-scores, kind="stable") if not np.isnan(scores[i])]
    if not order or budget == 0:
        return []
    chosen = [order[0]]
    for j in order[1:]:
        if budget is not None and len(chosen) >= budget:
            break
        if max(float(np.dot(units[k], units[j])) for k in chosen) <= threshold:
            chosen.append(j)
    return chosen


def angles(degrees: list[float]) -> np.ndarray:
    return np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees], dtype=np.float32)


def run_deita(vectors, scores, threshold=0.9, budget=None, block_size=1024, score="score") -> list[int]:
    data = Dataset.from_dict({
        "id": list(range(len(scores))),
        "score": [None if np.isnan(s) else float(s) for s in scores],
        "embedding": [None if v is None else [float(x) for x in v] for v in vectors],
    })
    config = DeitaConfig(budget=budget, score=score, threshold=threshold, block_size=block_size, device="cpu")
    return DeitaStrategy(config, seed=0).select(data)


@pytest.mark.parametrize("block_size", [1, 2, 4, 1024])
def test_worked_cases(block_size):
    first = angles([0, 10, 40, 55, 90, 65])
    scores = np.array([12, 10, 7.5, 7, 6, 5])
    assert run_deita(first, scores, budget=None, block_size=block_size) == [0, 2, 4]
    assert run_deita(first, scores, budget=2, block_size=block_size) == [0, 2]
    # compared with selected rows only: 1 (20 deg from 0) is rejected, 2 (20 deg from rejected 1) is kept
    assert run_deita(angles([0, 20, 40]), np.array([3.0, 2, 1]), block_size=block_size) == [0, 2]


def test_default_score_is_sum_of_per_turn_products():
    data = Dataset.from_dict({
        "complexity": [[1.0, 5.0], [4.0], [2.0, 2.0]],
        "quality": [[1.0, 1.0], [2.0], [3.0, 1.0]],  # sums of products: 6, 8, 8
        "embedding": [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
    })
    assert DeitaStrategy(DeitaConfig(budget=None), seed=0).select(data) == [1, 2, 0]


def clustered_pool(seed: int, n: int = 300, dim: int = 16):
    """Clusters of varied spread, exact duplicate rows, zero vectors, and integer (tied) scores."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, dim))
    spread = rng.uniform(0.05, 0.8, size=12)
    member = rng.integers(0, 12, size=n)
    vectors = (centers[member] + spread[member, None] * rng.normal(size=(n, dim))).astype(np.float32)
    duplicates = rng.choice(n, size=n // 10, replace=False)
    vectors[duplicates] = vectors[rng.choice(n, size=len(duplicates))]
    vectors[rng.choice(n, size=5, replace=False)] = 0.0
    scores = rng.integers(0, 6, size=n).astype(np.float64)
    return vectors, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.99])
def test_blocked_equals_reference_loop(seed, threshold):
    vectors, scores = clustered_pool(seed)
    units = unit_rows(torch.from_numpy(vectors))
    for budget in (None, 25):
        expected = reference_loop(vectors, scores, threshold, budget)
        assert len(expected) > 3
        assert run_deita(vectors, scores, threshold, budget, block_size=64) == expected  # through the dataset
        for block_size in (1, 3, 16, 1024):
            picks = repr_filter(units, stable_descending(scores), threshold, budget, block_size, torch.device("cpu"))
            assert picks == expected, (budget, block_size)


def test_equality_with_threshold_is_kept_in_and_across_blocks():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(2, 64)).astype(np.float32)
    vectors[1] = vectors[0] + 0.3 * vectors[1]
    units = unit_rows(torch.from_numpy(vectors)).double()
    exact = float(units[0] @ units[1])  # the similarity, as the strategy defines it
    scores = np.array([2.0, 1.0])
    for block_size in (1, 2):
        assert run_deita(vectors, scores, exact, None, block_size) == [0, 1]
        assert run_deita(vectors, scores, np.nextafter(exact, 0.0), None, block_size) == [0]


def test_zero_vectors_are_kept_and_nulls_are_unscored():
    vectors = [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], None, [1.0, 0.0]]
    scores = np.array([5.0, 4.0, 3.0, 9.0, np.nan])
    # zero vectors have cosine 0 with everything; row 3 has no embedding, row 4 no score
    assert run_deita(vectors, scores) == [0, 1, 2]
    assert run_deita(vectors, scores, budget=2) == [0, 1]


def test_budget_zero_selects_nothing():
    assert repr_filter(torch.eye(3), np.arange(3), 0.9, 0, 2, torch.device("cpu")) == []


def test_stable_descending_ties_lower_first_and_nan_last():
    assert stable_descending(np.array([1.0, np.nan, 3.0, 1.0, 3.0])).tolist() == [2, 4, 0, 3]


def test_top_k_kept_part_by_part_is_the_head_of_one_stable_sort():
    from deita_train.selection.simple import highest

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        scores = rng.choice([0.0, -0.0, 1.0, 2.5, np.nan, np.inf, -np.inf, 7.0], n)  # many ties
        budget, part = int(rng.integers(0, 12)), int(rng.integers(1, 9))
        best_scores, best_rows = np.empty(0), np.empty(0, dtype=np.int64)
        for start in range(0, n, part):
            best_scores, best_rows = highest(np.concatenate([best_scores, scores[start:start + part]]),
                                             np.concatenate([best_rows, np.arange(start, min(start + part, n))]),
                                             budget)
        assert best_rows.tolist() == stable_descending(scores)[:budget].tolist()
