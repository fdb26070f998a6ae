"""`ppl` and `loss`: perplexity exp(Lc), or Lc itself, of each assistant turn given its context (docs/methods.md 4, 7).

Lc is IFD's conditioned loss: the same prompts (either IFD convention), the same answer boundary
and truncation, one pass per turn. `ppl` keeps the loss itself as `<column>_loss`; `loss` is the
cheapest scorer for online selection (docs/methods.md, online selection: one pass, no direct pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from deita_train.scoring.base import Record, Score, register_scorer
from deita_train.scoring.config import ConditionedLossConfig, PerplexityScorerConfig
from deita_train.scoring.ifd import TurnLossScorer


def conditioned_scores(scorer: TurnLossScorer, batch: list[Record], value: Callable[[float], float],
                       keep_loss: bool) -> list[Score]:
    """Per record, `value(Lc)` of each turn (and the losses under `loss` when `keep_loss`), or why it is unscorable."""
    prepared = scorer.prepare(batch, direct=False)
    losses = scorer.mean_losses(prepared, lambda t: (t.conditioned, t.conditioned_start))
    return [
        Score.unscorable(passes) if isinstance(passes, str)
        else Score(value=[value(x) for x in loss], truncated=any(t.truncated for t in passes),
                   extras={"loss": loss} if keep_loss else {})
        for passes, loss in zip(prepared, losses, strict=True)
    ]


@register_scorer("ppl")
class PerplexityScorer(TurnLossScorer):
    """exp(mean answer-token loss) per assistant turn."""

    config_class = PerplexityScorerConfig

    def score_batch(self, batch: list[Record]) -> list[Score]:
        return conditioned_scores(self, batch, math.exp, keep_loss=True)


@register_scorer("loss")
class ConditionedLossScorer(TurnLossScorer):
    """The mean answer-token loss Lc per assistant turn."""

    config_class = ConditionedLossConfig

    def score_batch(self, batch: list[Record]) -> list[Score]:
        return conditioned_scores(self, batch, float, keep_loss=False)
