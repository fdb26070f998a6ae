"""`superfilter` and `cherry`: selection by IFD (instruction-following difficulty), docs/methods.md, IFD.

- Superfiltering (Li et al., ACL 2024): keep `ifd < 1` (strict; NaN dropped), sort descending, take the
  top k, given as a count (`budget`) or as a `fraction` of the *whole pool* (including unscored rows).
- Cherry LLM (Li et al., NAACL 2024): keep `ifd <= 1` (NaN dropped), take the top `fraction` of these
  *valid* rows (or a count), descending; `keep_pool_order` returns them in pool order instead.

Ties keep the lower row first. The score is an expression (default `mean(ifd)`: the mean over
assistant turns, which is the IFD itself for single-turn records).
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from deita_train.selection.base import Removed, ScoreNotes, Strategy, register_strategy
from deita_train.selection.config import IFDConfig
from deita_train.selection.deita import stable_descending
from deita_train.selection.scores import sample_scores


class IFDStrategy(Strategy):
    """Shared mechanics; subclasses set `inclusive` (keep ifd == 1) and `fraction_of_pool`.
    `details()`: `score_cut`, the scored rows failing the `cut`; `budget` is the count a `fraction` gives."""

    config_class = IFDConfig
    removals = ("score_cut",)
    inclusive: bool
    fraction_of_pool: bool

    def select(self, scored: Dataset) -> list[int]:
        ifd = sample_scores(scored, self.config.score)
        self.unranked = np.isnan(ifd)
        with np.errstate(invalid="ignore"):
            valid = (ifd <= 1) if self.inclusive else (ifd < 1)  # NaN compares False: dropped
        kept = np.where(valid, ifd, np.nan)
        ranked = stable_descending(kept)
        cut = f"{self.config.score} {'<=' if self.inclusive else '<'} 1"
        failing = np.flatnonzero(~self.unranked & ~valid)
        self.found = {"score_cut": len(failing), "cut": cut}
        self.removed = {"score_cut": Removed(failing, ScoreNotes(ifd, failing, cut))}
        if self.config.budget is None:
            base = len(scored) if self.fraction_of_pool else len(ranked)
            self.budget = int(base * self.config.fraction)
        picks = ranked[: self.budget]
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
