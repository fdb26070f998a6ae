"""The recipe's `online:` section (parsed and checked by `online/section.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deita_train.recipe.ranges import at_least_one, in_unit_interval
from deita_train.scoring.config import SCORER_CONFIGS, IFDScorerConfig, TurnLossConfig

# Scorers built on per-turn answer losses: they can run on the model being trained.
ONLINE_SCORERS = tuple(name for name in SCORER_CONFIGS.names()
                       if issubclass(SCORER_CONFIGS.get(name, "online.scorer.type"), TurnLossConfig))


@dataclass
class OnlineConfig:
    """`online:` — re-select the training subset with the model being trained (docs/methods.md, online selection).

    > When rounds fire

    Round 0 selects before the first step. With `every: epoch`, round k opens epoch k; with `every: steps`,
    round k fires after optimizer step k x `every_steps` and takes effect from the first batch the data
    loader has not drawn yet (mid-epoch switches included).

    > What a round does

    It scores a seeded random `pool_fraction` of the candidates (the rows SFT was given: `selected/` when the
    recipe selects, else `scored/` when it scores, else the pool) with `scorer` run on the training model; rows
    outside the slice keep the score of the round that last scored them, rows never scored (or unscorable) are
    left out. Then `select` picks `select.budget` rows, which fixes the number of optimizer steps per epoch; its
    filters and score expressions see the candidates' columns (offline scores included) beside `score_column`.
    Slices are drawn with (seed, k); a strategy that draws (`random`) gets seed + k.

    > Source mixing

    With `select.mix`, the strategy runs within each source's share of the budget (selection/mix.py). `mix:
    adaptive` moves the shares between rounds as DoReMi (Xie et al., 2023) moves domain weights: from round 1 on,
    with m_s the mean online score of every scored turn of source s (higher: less learned, for loss, ppl and
    IFD) and m the mean of the m_s, w_s <- w_s x exp(mix_step x (m_s - m)), renormalized, then
    (1 - mix_smoothing) x w + mix_smoothing / S over the S sources; a source with no scored row keeps its weight
    before renormalizing. Each round records its shares in `round.json` (`mix`), read back on resume.

    > RHO-LOSS (Mindermann et al., 2022)

    Score the candidates offline with `loss` under the irreducible-loss model (a small model trained on held-out
    data, with the training model's tokenizer and `convention`), e.g. `score: {reference_loss: {type: loss,
    model: ...}}`; online, use `scorer: {type: loss}` and `select: {strategy: top_k, score: score -
    reference_loss}`: each turn's training loss minus its irreducible loss, summed over turns, highest first.
    """

    select: Any = field(
        default=None,
        metadata={"help": "A `select:` block (strategy, filters, mix, options); `budget` is required. Rounds only."},
    )
    every: Literal["epoch", "steps", "batch"] = field(
        default="epoch", metadata={"help": "`epoch`: a round opens each epoch; `steps`: every `every_steps` steps; "
                                   "`batch`: each step trains the top 1/`batch_ratio` of a k-times draw."}
    )
    batch_ratio: int | None = field(
        default=None, metadata={"help": "With `every: batch`: rows drawn per row trained (k, at least 2)."}
    )
    batch_score: Literal["loss", "ifd"] = field(
        default="loss", metadata={"help": "With `every: batch`: `loss` (each row's training loss) or `ifd` (that "
                                  "loss over the loss of its answer tokens alone)."}
    )
    batch_reference: str | None = field(
        default=None, metadata={"help": "With `every: batch`: an expression over the candidates' columns subtracted "
                                "from each row's training loss (RHO-LOSS: the irreducible loss)."}
    )
    every_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps between rounds; required with `every: steps`."}
    )
    pool_fraction: float = field(
        default=1.0, metadata={"help": "Fraction of the candidates re-scored per round (a seeded random slice)."}
    )
    scorer: Any = field(
        default_factory=lambda: IFDScorerConfig(type="ifd"),
        metadata={"help": "Scorer run on the training model: `ifd` (default), `ppl` or `loss`, with its options."},
    )
    score_column: str = field(
        default="score",
        metadata={"help": "Column the online score is written to, read by `select` (e.g. top_k's `score`); "
                  "it replaces a candidate column of the same name."},
    )

    mix: Literal["fixed", "adaptive"] = field(default="fixed", metadata={"help": (
        "With `select.mix`: `fixed` keeps its shares; `adaptive` moves them each round toward the sources the "
        "model has learned least (the highest mean online score)")})
    mix_step: float = field(default=1.0, metadata={"help": "Step size (eta) of the adaptive update, above 0."})
    mix_smoothing: float = field(
        default=1e-3, metadata={"help": "Weight of the uniform mix blended into the adaptive shares, in [0, 1]."}
    )

    def problems(self) -> list[str]:
        """What is out of range or contradictory in the options, each message naming its key."""
        problems = at_least_one(self, "online", ("every_steps",)) + in_unit_interval(self.pool_fraction,
                                                                                      "online.pool_fraction")
        if self.every == "steps" and self.every_steps is None:
            problems.append("online.every_steps: required with `every: steps`")
        if self.every != "steps" and self.every_steps is not None:
            problems.append("online.every_steps: only read with `every: steps`; set that or remove every_steps")
        if self.every == "batch":
            return problems + self.batch_problems()
        problems += self.rounds_only()
        if self.select is None:
            return [*problems, "online.select: required: the `select:` block each round runs (budget included)"]
        if self.mix == "adaptive" and self.select.mix is None:
            problems.append("online.mix: `adaptive` moves the shares of online.select.mix: set online.select.mix "
                            "(by, shares) or use `mix: fixed`")
        if not self.mix_step > 0:
            problems.append(f"online.mix_step: must be above 0, got {self.mix_step}")
        if not 0 <= self.mix_smoothing <= 1:
            problems.append(f"online.mix_smoothing: must be in [0, 1], got {self.mix_smoothing}")
        return problems

    def batch_problems(self) -> list[str]:
        """`every: batch` reads `batch_ratio` alone: the score is each row's training loss, the kept share 1/k."""
        problems = []
        if self.batch_ratio is None or self.batch_ratio < 2:
            problems.append(f"online.batch_ratio: required with `every: batch`, at least 2, got {self.batch_ratio}")
        if self.select is not None:
            problems.append("online.select: per-batch selection keeps the top 1/batch_ratio of each draw by training "
                            "loss; remove select (or use `every: epoch|steps` rounds)")
        if self.mix != "fixed":
            problems.append("online.mix: only read by rounds (`every: epoch|steps`); remove it")
        return problems

    def rounds_only(self) -> list[str]:
        """The per-batch options set on a round-based config."""
        return [f"online.{name}: only read with `every: batch`; set that or remove {name}"
                for name in ("batch_ratio", "batch_reference") if getattr(self, name) is not None] + (
            ["online.batch_score: only read with `every: batch`; set that or remove batch_score"]
            if self.batch_score != "loss" else [])
