"""`random`, `top_k` and `threshold`: the simplest strategies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.base import Strategy, StrategyConfig, register_strategy
from deita_train.selection.deita import stable_descending
from deita_train.selection.scores import sample_scores


@register_strategy("random")
class RandomStrategy(Strategy):
    """`budget` rows drawn uniformly with the recipe seed, in draw order."""

    def select(self, scored: Dataset) -> list[int]:
        order = np.random.default_rng(self.seed).permutation(len(scored))
        return order[: self.config.budget].tolist()


@dataclass
class TopKConfig(StrategyConfig):
    score: str = field(default="score", metadata={"help": "Score expression (per-turn lists are summed) to rank by."})


@register_strategy("top_k")
class TopKStrategy(Strategy):
    """The `budget` highest-scoring rows, descending; ties keep the lower id first; unscored rows are not ranked."""

    config_class = TopKConfig

    def select(self, scored: Dataset) -> list[int]:
        ranked = stable_descending(sample_scores(scored, self.config.score))
        return ranked[: self.config.budget].tolist()


@dataclass
class ThresholdConfig(StrategyConfig):
    """Options of `threshold`: at least one of `min` and `max`."""

    score: str = field(default="score", metadata={"help": "Score expression (per-turn lists are summed)."})
    min: float | None = field(default=None, metadata={"help": "Keep rows with score >= min."})
    max: float | None = field(default=None, metadata={"help": "Keep rows with score <= max."})
    order: Literal["score", "pool"] = field(
        default="score", metadata={"help": "`score`: descending score (ties: lower id); `pool`: pool order."}
    )

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            raise RecipeError(["select: `threshold` needs `min`, `max` or both"])


@register_strategy("threshold")
class ThresholdStrategy(Strategy):
    """Rows whose score lies in [min, max]; unscored rows fail; `budget` truncates in the chosen order."""

    config_class = ThresholdConfig

    def select(self, scored: Dataset) -> list[int]:
        scores = sample_scores(scored, self.config.score)
        with np.errstate(invalid="ignore"):
            passing = ~np.isnan(scores)
            if self.config.min is not None:
                passing &= scores >= self.config.min
            if self.config.max is not None:
                passing &= scores <= self.config.max
        if self.config.order == "pool":
            picks = np.flatnonzero(passing)
        else:
            picks = stable_descending(np.where(passing, scores, np.nan))
        return picks[: self.config.budget].tolist()
