"""`deita`: score-first, diversity-aware selection (Deita's Repr Filter), docs/methods.md, Repr Filter.

```
s_i   = score expression per row (default sum_t complexity_t * quality_t)
order = stable argsort of -s                  (ties: lower row first; unscored rows are left out)
S     = [order[0]]; for j in order[1:]: stop at budget; keep j iff max_{k in S} <E_j, E_k> <= threshold
```
Candidates are compared with already *selected* rows only (not with earlier rejected ones, the
deviation of the authors' batched code). The selected set lives in a preallocated tensor on the
device; each block of candidates is tested against it with one matrix product, then the block is
resolved by an in-block greedy pass over its Gram matrix, so the picks equal the one-at-a-time loop.

Similarity convention (identical in both paths, and in the test's reference loop): rows are
L2-normalized in float32 (a zero vector stays zero, so its cosine with everything is 0 and it is kept
unless the budget stops it); the similarity is the float32 dot product, and any product within the
float32 error bound of the threshold is recomputed exactly in float64, so the keep/reject decision
does not depend on the shape of the matrix product that computed it. TF32 matmuls must stay off
(PyTorch's default) for that bound to hold.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset

from deita_train.selection.base import Removed, Strategy, register_strategy
from deita_train.selection.config import DeitaConfig
from deita_train.selection.scores import arrow_column, embedding_matrix, sample_scores


@register_strategy("deita")
class DeitaStrategy(Strategy):
    """Deita's score-first diverse selection; see the module docstring. `details()`: `rejected_by_diversity`, the
    rows reached in score order and rejected as too similar to a selected row before the budget was filled."""

    config_class = DeitaConfig
    removals = ("rejected_by_diversity",)

    def select(self, scored: Dataset) -> list[int]:
        scores = sample_scores(scored, self.config.score)
        vectors, valid = embedding_matrix(scored, self.config.embedding)
        self.unranked = ~valid | np.isnan(scores)
        rows = np.flatnonzero(valid)  # position in `vectors` -> row of `scored`
        ranked = stable_descending(scores[rows])
        device = torch.device(self.config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        units = unit_rows(torch.from_numpy(vectors))
        picks = repr_filter(units, ranked, self.config.threshold, self.config.budget, self.config.block_size, device)
        reached = ranked[: visited(ranked, picks, self.config.budget)]
        rejected = np.sort(np.setdiff1d(reached, np.asarray(picks, dtype=np.int64)))
        self.found = {"rejected_by_diversity": len(rejected)}
        ids = arrow_column(scored, "id").to_numpy() if "id" in scored.column_names else np.arange(len(scored))
        nearest, similarity = nearest_selected(units, rejected, picks, self.config.block_size, device)
        notes = [f"similarity {s:.4f} > {self.config.threshold} to selected id {ids[rows[picks[j]]]}"
                 for j, s in zip(nearest, similarity, strict=True)]
        self.removed = {"rejected_by_diversity": Removed(rows[rejected], notes)}
        return rows[picks].tolist()


def nearest_selected(units: torch.Tensor, rejected: np.ndarray, picks: list[int], block_size: int,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """For each rejected row of `units`, the pick (index into `picks`) most similar to it, and that similarity."""
    if not len(rejected):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    chosen = units[torch.as_tensor(picks, dtype=torch.long)].to(device)
    nearest, similarity = [], []
    for start in range(0, len(rejected), block_size):
        block = units[torch.from_numpy(rejected[start : start + block_size])].to(device)
        best = (block.float() @ chosen.float().T).max(dim=1)
        nearest.append(best.indices.cpu().numpy())
        similarity.append(best.values.cpu().numpy())
    return np.concatenate(nearest), np.concatenate(similarity)


def visited(order: np.ndarray, picks: list[int], budget: int | None) -> int:
    """Candidates of `order` examined: up to the last pick when the picks filled the budget, else all of them."""
    if budget is not None and picks and len(picks) >= budget:
        return int(np.flatnonzero(order == picks[-1])[0]) + 1
    return len(order)


def stable_descending(scores: np.ndarray) -> np.ndarray:
    """Positions of the finite scores, highest first; ties keep the lower position first; NaN left out."""
    order = np.argsort(-scores, kind="stable")
    return order[~np.isnan(scores[order])]


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """float32 rows divided by their L2 norm; a zero row stays zero."""
    vectors = vectors.to(torch.float32)
    norms = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(torch.finfo(torch.float32).tiny), 0.0)


def above(left: torch.Tensor, right: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean matrix `<left_i, right_j> > threshold` for unit float32 rows, exact near the threshold.

    The float32 product of two unit vectors of size D is within D * 2^-24 of the exact value (the sum
    of |a_i b_i| is at most 1); entries inside twice that band are recomputed in float64 (each float32
    product is exact in float64), so the result does not depend on how the product was blocked.
    """
    sims = left @ right.T
    band = 2 * left.shape[1] * 2.0**-24
    result = sims > threshold
    near = torch.nonzero((sims - threshold).abs() <= band, as_tuple=True)
    if near[0].numel():
        exact = (left[near[0]].double() * right[near[1]].double()).sum(dim=1)
        result[near] = exact > threshold
    return result


def repr_filter(
    units: torch.Tensor,
    order: np.ndarray,
    threshold: float,
    budget: int | None,
    block_size: int,
    device: torch.device,
) -> list[int]:
    """Deita's greedy diversity filter over `units` (n, D; rows from `unit_rows`) visited in `order`.

    Returns the picked positions in selection order.
    Identical to the one-at-a-time loop: a candidate is kept iff no already selected row (from earlier
    blocks, or accepted earlier in its own block) has similarity above `threshold`.
    """
    limit = len(order) if budget is None else min(budget, len(order))
    if limit <= 0:
        return []
    selected = torch.empty((limit, units.shape[1]), dtype=torch.float32, device=device)
    count = 0
    picks: list[int] = []
    for start in range(0, len(order), block_size):
        ids = order[start : start + block_size]
        block = units[torch.from_numpy(ids)].to(device)
        fresh = ~above(block, selected[:count], threshold).any(dim=1) if count else torch.ones(len(ids), dtype=bool)
        alive = torch.nonzero(fresh.cpu(), as_tuple=True)[0].numpy()
        if not len(alive):
            continue
        candidates = block[torch.from_numpy(alive).to(device)]
        clash = above(candidates, candidates, threshold).cpu().numpy()
        accepted: list[int] = []  # positions within `alive`
        blocked = np.zeros(len(alive), dtype=bool)  # too similar to a row accepted earlier in this block
        for i in range(len(alive)):
            if count + len(accepted) >= limit:
                break
            if not blocked[i]:
                accepted.append(i)
                blocked |= clash[i]
        if accepted:
            chosen = torch.as_tensor(accepted, device=device)
            selected[count : count + len(accepted)] = candidates[chosen]
            count += len(accepted)
            picks.extend(int(ids[alive[i]]) for i in accepted)
        if count >= limit:
            break
    return picks
