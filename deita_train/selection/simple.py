"""`random` and `top_k`: the simplest strategies."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from deita_train.selection.base import Strategy, StrategyConfig, register_strategy
from deita_train.selection.scores import sample_scores


@register_strategy("random")
class RandomStrategy(Strategy):
    """`budget` rows drawn uniformly with the recipe seed, in draw order."""

    def select(self, scored: Dataset) -> list[int]:
        order = np.random.default_rng(self.seed).permutation(len(scored))
        return order[: self.config.budget].tolist()


@dataclass
class TopKConfig(StrategyConfig):
    score: str = field(default="score", metadata={"help": "Column (per-turn lists are summed) to rank by."})


@register_strategy("top_k")
class TopKStrategy(Strategy):
    """The `budget` highest-scoring rows, descending; ties keep the lower id first; unscored rows are not ranked."""

    config_class = TopKConfig

    def select(self, scored: Dataset) -> list[int]:
        values = sample_scores(scored, self.config.score)
        ranked = [i for i in np.argsort(-values, kind="stable") if not np.isnan(values[i])]
        return [int(i) for i in ranked[: self.config.budget]]
