"""`random`, `top_k` and `threshold`: the simplest strategies."""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from deita_train.selection.base import Removed, ScoreNotes, Strategy, register_strategy
from deita_train.selection.config import ThresholdConfig, TopKConfig
from deita_train.selection.deita import stable_descending
from deita_train.selection.scores import sample_scores, score_parts


@register_strategy("random")
class RandomStrategy(Strategy):
    """`budget` rows drawn uniformly with the recipe seed, in draw order."""

    def select(self, scored: Dataset) -> list[int]:
        order = np.random.default_rng(self.seed).permutation(len(scored))
        return order[: self.config.budget].tolist()


@register_strategy("top_k")
class TopKStrategy(Strategy):
    """The `budget` highest-scoring rows, descending; ties keep the lower id first; unscored rows are not ranked."""

    config_class = TopKConfig

    def select(self, scored: Dataset) -> list[int]:
        budget = self.config.budget
        if budget is None:  # every row ranked: one sort of all the scores
            scores = sample_scores(scored, self.config.score)
            self.unranked = np.isnan(scores)
            return stable_descending(scores).tolist()
        # the best `budget` rows so far, kept part by part: memory is one part, not one score per row
        self.unranked = np.empty(len(scored), dtype=bool)
        best_scores, best_rows = np.empty(0), np.empty(0, dtype=np.int64)
        for start, scores in score_parts(scored, self.config.score):
            self.unranked[start:start + len(scores)] = np.isnan(scores)
            best_scores, best_rows = highest(np.concatenate([best_scores, scores]),
                                             np.concatenate([best_rows, start + np.arange(len(scores))]), budget)
        return best_rows.tolist()


def highest(scores: np.ndarray, rows: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The `budget` highest scores (NaN left out) and their `rows`, highest first; ties keep the lower row first,
    as `stable_descending` orders them."""
    ranked = ~np.isnan(scores)
    scores, rows = scores[ranked], rows[ranked]
    if len(scores) > budget:  # cut before sorting; every row tied with the budget-th highest stays
        cut = np.partition(scores, len(scores) - budget)[len(scores) - budget] if budget else np.inf
        keep = scores >= cut
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:budget]
    return scores[order], rows[order]


@register_strategy("threshold")
class ThresholdStrategy(Strategy):
    """Rows whose score lies in [min, max]; unscored rows fail; `budget` truncates in the chosen order.
    `details()`: `score_cut`, the scored rows outside [min, max], and the `cut` a row must pass."""

    config_class = ThresholdConfig
    removals = ("score_cut",)

    def select(self, scored: Dataset) -> list[int]:
        scores = sample_scores(scored, self.config.score)
        self.unranked = np.isnan(scores)
        with np.errstate(invalid="ignore"):
            passing = ~np.isnan(scores)
            if self.config.min is not None:
                passing &= scores >= self.config.min
            if self.config.max is not None:
                passing &= scores <= self.config.max
        cut = np.flatnonzero(~self.unranked & ~passing)
        self.found = {"score_cut": len(cut), "cut": self.cut()}
        self.removed = {"score_cut": Removed(cut, ScoreNotes(scores, cut, self.cut()))}
        if self.config.order == "pool":
            picks = np.flatnonzero(passing)
        else:
            picks = stable_descending(np.where(passing, scores, np.nan))
        return picks[: self.config.budget].tolist()

    def cut(self) -> str:
        """What a row's score must satisfy, e.g. `quality >= 4.0 and quality <= 5.0`."""
        bounds = [(">=", self.config.min), ("<=", self.config.max)]
        return " and ".join(f"{self.config.score} {sign} {value}" for sign, value in bounds if value is not None)
