"""`superfilter` and `cherry`: selection by IFD (instruction-following difficulty), METHODS.md section 4.

- Superfiltering (Li et al., ACL 2024): keep `ifd < 1` (strict; NaN dropped), sort descending, take the
  top k, given as a count (`budget`) or as a `fraction` of the *whole pool* (including unscored rows).
- Cherry LLM (Li et al., NAACL 2024): keep `ifd <= 1` (NaN dropped), take the top `fraction` of these
  *valid* rows (or a count), descending; `keep_pool_order` returns them in pool order instead.

Ties keep the lower row first. The score is an expression (default `mean(ifd)`: the mean over
assistant turns, which is the IFD itself for single-turn records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.base import Strategy, StrategyConfig, register_strategy
from deita_train.selection.deita import stable_descending
from deita_train.selection.scores import sample_scores


@dataclass
class IFDConfig(StrategyConfig):
    """Options of `superfilter` and `cherry`: `budget` (a count) or `fraction`, not both."""

    score: str = field(default="mean(ifd)", metadata={"help": "IFD expression; default: mean over turns."})
    fraction: float | None = field(
        default=None, metadata={"help": "Share to keep: of the whole pool (superfilter) or of valid rows (cherry)."}
    )
    keep_pool_order: bool = field(default=False, metadata={"help": "Return the kept rows in pool order."})

    def __post_init__(self) -> None:
        if (self.budget is None) == (self.fraction is None):
            raise RecipeError(["select: give exactly one of `budget` (a count) or `fraction`"])
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise RecipeError([f"select.fraction: {self.fraction} is not in (0, 1]"])


class IFDStrategy(Strategy):
    """Shared mechanics; subclasses set `inclusive` (keep ifd == 1) and `fraction_of_pool`."""

    config_class = IFDConfig
    inclusive: bool
    fraction_of_pool: bool

    def select(self, scored: Dataset) -> list[int]:
        ifd = sample_scores(scored, self.config.score)
        with np.errstate(invalid="ignore"):
            valid = (ifd <= 1) if self.inclusive else (ifd < 1)  # NaN compares False: dropped
        kept = np.where(valid, ifd, np.nan)
        ranked = stable_descending(kept)
        if self.config.budget is not None:
            count = self.config.budget
        else:
            base = len(scored) if self.fraction_of_pool else len(ranked)
            count = int(base * self.config.fraction)
        picks = ranked[:count]
        return sorted(picks.tolist()) if self.config.keep_pool_order else picks.tolist()


@register_strategy("superfilter")
class SuperfilterStrategy(IFDStrategy):
    """Superfiltering: `ifd < 1`, top k of the whole pool by IFD, descending."""

    inclusive = False
    fraction_of_pool = True


@register_strategy("cherry")
class CherryStrategy(IFDStrategy):
    """Cherry LLM: `ifd <= 1`, top fraction of the valid rows by IFD, descending."""

    inclusive = True
    fraction_of_pool = False
