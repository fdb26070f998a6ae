"""`ppl`: perplexity exp(Lc) of each assistant turn given its context (METHODS.md section 4).

Lc is IFD's conditioned loss: the same prompts (either IFD convention), the same answer boundary
and truncation, one pass per turn. The loss itself is kept as `<column>_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deita_train.scoring.base import Record, Score, register_scorer
from deita_train.scoring.ifd import TurnLossConfig, TurnLossScorer


@dataclass
class PerplexityScorerConfig(TurnLossConfig):
    """`ppl` options: the prompt convention and the pass length."""


@register_scorer("ppl")
class PerplexityScorer(TurnLossScorer):
    """exp(mean answer-token loss) per assistant turn."""

    config_class = PerplexityScorerConfig

    def score_batch(self, batch: list[Record]) -> list[Score]:
        prepared = self.prepare(batch, direct=False)
        losses = self.mean_losses(prepared, lambda t: (t.conditioned, t.conditioned_start))
        return [
            Score.unscorable(passes) if isinstance(passes, str)
            else Score(value=[math.exp(x) for x in loss], truncated=any(t.truncated for t in passes),
                       extras={"loss": loss})
            for passes, loss in zip(prepared, losses, strict=True)
        ]
