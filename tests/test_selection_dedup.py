"""`dedup` (Magpie's rule) against a brute-force numpy check, for every backend."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from deita_train.selection.dedup import DedupConfig, DedupStrategy, neighbor_stats


def brute_force(vectors: np.ndarray, radius: float):
    x = vectors.astype(np.float64)
    squared = np.maximum((x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T, 0)
    np.fill_diagonal(squared, np.inf)
    close = squared < radius
    earlier = np.tril(close, k=-1)  # j < i
    return squared.min(1), close.sum(1), earlier.any(1)


def near_duplicate_pool(seed: int, n: int = 400, dim: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim))
    copies = rng.choice(n, size=n // 4, replace=False)
    vectors[copies] = vectors[rng.choice(n, size=len(copies))] + 0.02 * rng.normal(size=(len(copies), dim))
    vectors[rng.choice(n, size=10)] = vectors[0]  # a group of exact duplicates
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("seed", range(3))
def test_neighbor_stats_match_brute_force(backend, seed):
    vectors = near_duplicate_pool(seed)
    nearest, repeats, duplicate = brute_force(vectors, 0.05)
    assert duplicate.sum() > 20 and (~duplicate).sum() > 200
    stats = neighbor_stats(vectors, DedupConfig(backend=backend, query_block=128, neighbors=4))  # group of 11
    np.testing.assert_allclose(stats.min_neighbor_distance, nearest, atol=1e-5)
    np.testing.assert_array_equal(stats.repeat_count, repeats)
    np.testing.assert_array_equal(stats.duplicate, duplicate)


def test_ivf_index_finds_the_duplicates():
    vectors = near_duplicate_pool(5, n=1000)
    _, _, duplicate = brute_force(vectors, 0.05)
    stats = neighbor_stats(vectors, DedupConfig(backend="faiss", index="ivf", nlist=16, nprobe=16))
    np.testing.assert_array_equal(stats.duplicate, duplicate)  # nprobe == nlist: exhaustive


def test_strategy_keeps_first_of_each_group_in_pool_order():
    data = Dataset.from_dict({
        "embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], None, [0.0, 1.0], [-1.0, 0.0]],
    })
    strategy = DedupStrategy(DedupConfig(backend="faiss"), seed=0)
    assert strategy.select(data) == [0, 1, 5]
    assert strategy.details() == {"duplicates": 2, "with_repeats": 4}
