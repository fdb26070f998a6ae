"""`random`, `top_k` and `threshold`: the simplest strategies."""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from deita_train.selection.base import Removed, Strategy, register_strategy, score_notes
from deita_train.selection.config import ThresholdConfig, TopKConfig
from deita_train.selection.deita import stable_descending
from deita_train.selection.scores import sample_scores


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
        scores = sample_scores(scored, self.config.score)
        self.unranked = np.isnan(scores)
        return stable_descending(scores)[: self.config.budget].tolist()


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
        self.removed = {"score_cut": Removed(cut, score_notes(scores, cut, self.cut()))}
        if self.config.order == "pool":
            picks = np.flatnonzero(passing)
        else:
            picks = stable_descending(np.where(passing, scores, np.nan))
        return picks[: self.config.budget].tolist()

    def cut(self) -> str:
        """What a row's score must satisfy, e.g. `quality >= 4.0 and quality <= 5.0`."""
        bounds = [(">=", self.config.min), ("<=", self.config.max)]
        return " and ".join(f"{self.config.score} {sign} {value}" for sign, value in bounds if value is not None)
