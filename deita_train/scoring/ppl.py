"""`ppl`: perplexity exp(Lc) of each assistant turn given its context (METHODS.md section 4).

Lc is IFD's conditioned loss: the same prompts (either IFD convention), the same answer boundary
and truncation, one pass per turn. The loss itself is kept as `<column>_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deita_train.scoring import lm
from deita_train.scoring.base import Record, Score, Scorer, register_scorer
from deita_train.scoring.ifd import DEFAULT_MAX_LENGTH, Convention, mean_loss, record_passes


@dataclass
class PerplexityScorerConfig(lm.ModelScorerConfig):
    """`ppl` options: the prompt convention and the pass length."""

    convention: Convention = field(
        default="superfiltering",
        metadata={"help": "How the context is written: `superfiltering` (plain) or `cherry` (Alpaca template)."},
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per pass; defaults to the convention's (1024 / 512)."}
    )


@register_scorer("ppl")
class PerplexityScorer(Scorer):
    """exp(mean answer-token loss) per assistant turn."""

    config_class = PerplexityScorerConfig
    per_turn = True

    def models(self) -> list[str]:
        return [lm.model_name(self.config, self.context)]

    def load(self) -> None:
        self.tokenizer = lm.load_tokenizer(self.config, self.context)
        self.model = lm.load_model(self.config, self.context)
        self.bos = lm.bos_prefix(self.tokenizer)
        self.max_length = self.config.max_length or DEFAULT_MAX_LENGTH[self.config.convention]

    def close(self) -> None:
        del self.model, self.tokenizer

    def score_batch(self, batch: list[Record]) -> list[Score]:
        prepared = [record_passes(self.tokenizer, self.bos, r, self.config.convention, self.max_length, direct=False)
                    for r in batch]
        flat = [turn for passes in prepared if not isinstance(passes, str) for turn in passes]
        losses = lm.token_losses(self.model, [t.conditioned for t in flat], [t.conditioned_start for t in flat],
                                 lm.pad_id(self.tokenizer), self.config.batch_tokens, self.config.max_batch_size)
        scores, position = [], 0
        for passes in prepared:
            if isinstance(passes, str):
                scores.append(Score.unscorable(passes))
                continue
            loss = [mean_loss(losses[position + k]) for k in range(len(passes))]
            position += len(passes)
            scores.append(Score(value=[math.exp(x) for x in loss], truncated=any(t.truncated for t in passes),
                                extras={"loss": loss}))
        return scores
