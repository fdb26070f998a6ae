"""`dedup`: Magpie's embedding near-duplicate rule (Xu et al., arXiv 2406.08464), docs/methods.md, Magpie synthesis.

Over L2-normalized embeddings (optional), with squared L2 distances:
- `min_neighbor_distance`: distance to the nearest *other* row;
- `repeat_count`: how many other rows lie strictly within `radius` (default 0.05);
- a row is a duplicate iff an *earlier* row lies within `radius`; the first of a group is kept.
The strategy keeps the non-duplicates in pool order (`budget` truncates).

Backends: FAISS on the CPU (`IndexFlatL2`, exact; or `IndexIVFFlat`, approximate, for large pools),
one k-NN search (nearest other row, repeats, duplicates), then a range search for the rows whose k
neighbours all lie inside the radius (so counts stay exact however large a group is); or, when CUDA is present
(this faiss build has no GPU support), an exact blocked search with torch matrix products on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from deita_train.selection.base import Removed, Strategy, register_strategy
from deita_train.selection.config import DedupConfig
from deita_train.selection.deita import unit_rows
from deita_train.selection.scores import arrow_column, embedding_matrix


@dataclass
class NeighborStats:
    """Per-row results of `neighbor_stats`, in row order."""

    min_neighbor_distance: np.ndarray  # float32; inf when there is no other row (or none found, IVF)
    repeat_count: np.ndarray  # int64
    duplicate: np.ndarray  # bool
    earlier: np.ndarray  # int64: the nearest earlier row within the radius (what makes a duplicate); -1 for none


@register_strategy("dedup")
class DedupStrategy(Strategy):
    """Drop rows with an earlier near-duplicate; keep the rest in pool order. `details()`: `duplicates` (the rows
    dropped) and `with_repeats` (rows with any other row within the radius, the first of a group included)."""

    config_class = DedupConfig
    removals = ("duplicates",)

    def select(self, scored: Dataset) -> list[int]:
        vectors, valid = embedding_matrix(scored, self.config.embedding)
        self.unranked = ~valid
        if self.config.normalize:
            vectors = unit_rows(torch.from_numpy(vectors)).numpy()
        stats = neighbor_stats(vectors, self.config)
        rows = np.flatnonzero(valid)
        self.found = {"duplicates": int(stats.duplicate.sum()), "with_repeats": int((stats.repeat_count > 0).sum())}
        ids = arrow_column(scored, "id").to_numpy() if "id" in scored.column_names else np.arange(len(scored))
        duplicates = np.flatnonzero(stats.duplicate)
        notes = [f"within {self.config.radius} (squared L2) of the earlier id {ids[rows[stats.earlier[i]]]}"
                 for i in duplicates]
        self.removed = {"duplicates": Removed(rows[duplicates], notes)}
        return rows[~stats.duplicate][: self.config.budget].tolist()


def neighbor_stats(vectors: np.ndarray, config: DedupConfig) -> NeighborStats:
    """Nearest-other distance, repeat count and duplicate flag for each row of float32 `vectors`."""
    use_torch = config.backend == "torch" or (config.backend == "auto" and torch.cuda.is_available())
    if use_torch:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch_neighbor_stats(torch.from_numpy(vectors).to(device), config.radius, config.query_block // 16)
    return faiss_neighbor_stats(np.ascontiguousarray(vectors, dtype=np.float32), config)


def faiss_neighbor_stats(vectors: np.ndarray, config: DedupConfig) -> NeighborStats:
    """FAISS CPU: a k-NN search, plus a range search for saturated rows, in blocks of queries."""
    try:
        import faiss  # here, not at import time: hosts without FAISS still load the other strategies
    except ImportError as error:
        raise ImportError("dedup: the faiss backend needs FAISS (`pip install faiss-cpu`); or set `backend: torch` "
                          "(exact blocked search with matrix products)") from error
    n, d = vectors.shape
    if config.index == "flat":
        index = faiss.IndexFlatL2(d)
    else:
        nlist = config.nlist or max(1, int(4 * np.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = config.nprobe
    index.add(vectors)
    nearest = np.full(n, np.inf, dtype=np.float32)
    repeats = np.zeros(n, dtype=np.int64)
    duplicate = np.zeros(n, dtype=bool)
    earlier = np.full(n, -1, dtype=np.int64)
    k = min(config.neighbors, n)
    for start in range(0, n, config.query_block):
        queries = vectors[start : start + config.query_block]
        ids = np.arange(start, start + len(queries))
        distances, labels = index.search(queries, k)
        other = (labels != ids[:, None]) & (labels >= 0)
        nearest[ids] = np.where(other, distances, np.inf).min(axis=1)
        close = other & (distances < config.radius)
        repeats[ids] = close.sum(1)
        before = close & (labels < ids[:, None])  # distances ascend along a row: the first is the nearest
        duplicate[ids] = before.any(1)
        earlier[ids] = np.where(duplicate[ids], labels[np.arange(len(ids)), before.argmax(1)], -1)
        # all k neighbours inside the radius: there may be more; count those rows exactly by range search
        saturated = np.flatnonzero((labels[:, -1] >= 0) & (distances[:, -1] < config.radius))
        if len(saturated):
            limits, found_distances, found = index.range_search(queries[saturated], config.radius)
            owner = np.repeat(ids[saturated], np.diff(limits.astype(np.int64)))
            others = found != owner
            repeats[ids[saturated]] = np.bincount(owner[others] - start, minlength=len(ids))[saturated]
            duplicate[ids[saturated]] = False
            earlier[ids[saturated]] = -1
            prior = found < owner
            order = np.lexsort((found_distances[prior], owner[prior]))  # by row, then nearest first
            owners, first = np.unique(owner[prior][order], return_index=True)
            duplicate[owners] = True
            earlier[owners] = found[prior][order][first]
    return NeighborStats(nearest, repeats, duplicate, earlier)


def torch_neighbor_stats(points: torch.Tensor, radius: float, block: int) -> NeighborStats:
    """Exact blocked search with matrix products (for the GPU): O(block * n) memory."""
    n = len(points)
    squared_norms = (points * points).sum(1)
    columns = torch.arange(n, device=points.device)
    nearest = torch.empty(n, dtype=torch.float32, device=points.device)
    repeats = torch.empty(n, dtype=torch.int64, device=points.device)
    duplicate = torch.empty(n, dtype=torch.bool, device=points.device)
    earlier = torch.empty(n, dtype=torch.int64, device=points.device)
    for start in range(0, n, block):
        rows = torch.arange(start, min(start + block, n), device=points.device)
        squared = points[rows] @ points.T  # then |x|^2 + |y|^2 - 2<x, y> in place: one [block, n] buffer
        squared.mul_(-2).add_(squared_norms[None, :]).add_(squared_norms[rows, None]).clamp_min_(0)
        squared[rows - start, rows] = float("inf")  # not its own neighbour
        nearest[rows] = squared.min(1).values
        close = squared < radius
        repeats[rows] = close.sum(1)
        before = close & (columns[None, :] < rows[:, None])
        duplicate[rows] = before.any(1)
        nearest_before = torch.where(before, squared, float("inf")).argmin(1)
        earlier[rows] = torch.where(duplicate[rows], nearest_before, -1)
    return NeighborStats(nearest.cpu().numpy(), repeats.cpu().numpy(), duplicate.cpu().numpy(), earlier.cpu().numpy())
