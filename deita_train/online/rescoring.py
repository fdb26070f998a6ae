"""One online round's work: score a slice of the candidates with the training model, then select.

Scoring is sharded: every process draws the same seeded slice, scores positions r, r + N, r + 2N, ... of
it with the in-memory model (`TurnLossScorer.use`), in eval mode under `torch.inference_mode()`, and the
scores are gathered onto every process (`accelerate.utils.gather_object`). Under DeepSpeed ZeRO-3 every
module call gathers that module's parameters from all processes, so all processes must make the same calls
in the same order: each calls `score_batch` once, even with an empty share, and `lm.token_losses` pads the
smaller shares with dummy decoder passes and empty LM-head calls up to the largest counts (`sync_batches`).
Selection runs on the main process. FSDP is not supported (the trainer refuses it). With `online.select.mix`,
`round_shares` gives each round's shares (moved with `mix: adaptive`: `adapted_shares`, see OnlineConfig).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from accelerate.utils import gather_object
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from deita_train.online.config import OnlineConfig
from deita_train.scoring.base import Score, ScoringContext
from deita_train.scoring.engine import value_array
from deita_train.scoring.scorers import SCORERS
from deita_train.selection.mix import MixedStrategy, build_strategy, source_index
from deita_train.selection.runner import choose
from deita_train.selection.scores import sample_scores


def slice_positions(size: int, fraction: float, seed: int, round_index: int) -> np.ndarray:
    """The candidates re-scored in a round: a sorted, seeded random `fraction` of `range(size)` (all at 1.0)."""
    if fraction >= 1.0:
        return np.arange(size)
    count = max(1, math.ceil(fraction * size))
    return np.sort(np.random.default_rng([seed, round_index]).choice(size, count, replace=False))


def score_share(config: OnlineConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                records: list[dict[str, Any]], zero3: bool) -> list[Score]:
    """Scores of `records` (this process's share) with the training model, restoring its train/eval mode."""
    scorer = SCORERS.get(config.scorer.type, "online.scorer.type")(config.scorer, ScoringContext())
    if isinstance(model, PeftModel):
        model = model.get_base_model()  # the causal LM with the adapters in place: what `lm` reads
    sync = (lambda count: max(gather_object([count]))) if zero3 else None
    training = model.training
    model.eval()
    try:
        scorer.use(model, tokenizer, sync)
        return scorer.score_batch(records)
    finally:
        model.train(training)


@dataclass
class ScoreTable:
    """Every candidate's latest online score (per-turn values), its extras, and the round that last scored it.

    Rows outside a round's slice keep their earlier score; a row never scored, or unscorable, has None.
    """

    values: list[list[float] | None]
    extras: dict[str, list[Any]] = field(default_factory=dict)
    scored_round: list[int | None] = field(default_factory=list)

    @classmethod
    def empty(cls, size: int) -> ScoreTable:
        return cls(values=[None] * size, scored_round=[None] * size)

    @classmethod
    def from_dataset(cls, scores: Dataset, column: str) -> ScoreTable:
        """Read back a round's `scores/` (written by `to_arrow`)."""
        prefix, data = f"{column}_", scores.to_dict()
        extras = {name[len(prefix):]: values for name, values in data.items() if name.startswith(prefix)}
        return cls(values=data[column], extras=extras, scored_round=data["scored_round"])

    def update(self, positions: list[int], scores: list[Score], round_index: int) -> Counter:
        """Put a round's scores in; returns the unscorable reasons counted."""
        reasons: Counter = Counter()
        for position, score in zip(positions, scores, strict=True):
            self.values[position] = score.value
            self.scored_round[position] = round_index
            for name, value in score.extras.items():
                self.extras.setdefault(name, [None] * len(self.values))[position] = value
            for name in self.extras.keys() - score.extras.keys():
                self.extras[name][position] = None
            if score.reason is not None:
                reasons[score.reason] += 1
        return reasons

    def to_arrow(self, ids: list[int], column: str) -> pa.Table:
        """`id`, `column`, `<column>_<extra>` and `scored_round`, one row per candidate."""
        columns = {"id": pa.array(ids, pa.int64()), column: value_array(self.values, per_turn=True)}
        columns |= {f"{column}_{name}": value_array(v, per_turn=True) for name, v in sorted(self.extras.items())}
        return pa.table(columns | {"scored_round": pa.array(self.scored_round, pa.int64())})


def select_round(candidates: Dataset, table: ScoreTable, config: OnlineConfig, seed: int,
                 shares: dict[str, float] | None = None) -> tuple[list[int], dict]:
    """Rows of `candidates` chosen by `config.select` (within `shares`, which replace `select.mix`'s) among the rows
    with a score, and the step counts (with a mix, `mix`: the rows selected per source).

    The strategy sees the candidates' own columns plus the online score as `config.score_column`.
    """
    scored = [i for i, value in enumerate(table.values) if value is not None]
    if not scored:
        raise RuntimeError("online selection: no candidate has a score (every record was unscorable)")
    column = config.score_column
    view = candidates.remove_columns([c for c in candidates.column_names if c == column])
    view = view.add_column(column, [table.values[i] for i in range(len(candidates))]).select(scored)
    strategy = build_strategy(config.select, seed, "online.select", shares)
    seconds: dict[str, float] = {}
    choice = choose(view, config.select, strategy, seconds)
    picks, passed, filter_steps = choice.picks, choice.positions, choice.filter_steps
    totals = sample_scores(view.select_columns([column]), column, "online.score_column")
    details = {
        "filters": filter_steps,
        "filtered": len(passed),
        "scores": {"scored": describe(totals), "selected": describe(totals[picks])},
        "seconds": seconds,
    }
    if isinstance(strategy, MixedStrategy):
        details["mix"] = {name: source["selected"] for name, source in strategy.sources.items()}
    return [scored[p] for p in picks], details


def source_means(candidates: Dataset, table: ScoreTable, by: str, names: list[str]) -> np.ndarray:
    """Per source of `names` (the candidates' `by` values), the mean online score of every scored turn of its rows;
    NaN for a source with none."""
    values = value_array(table.values, per_turn=True)
    turns = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    owner = source_index(candidates, by, names, "online.select")[pc.list_parent_indices(values).to_numpy()]
    kept = (owner >= 0) & np.isfinite(turns)
    totals = np.bincount(owner[kept], weights=turns[kept], minlength=len(names))
    counts = np.bincount(owner[kept], minlength=len(names))
    return np.divide(totals, counts, out=np.full(len(names), np.nan), where=counts > 0)


def adapted_shares(shares: np.ndarray, means: np.ndarray, step: float, smoothing: float) -> np.ndarray:
    """DoReMi's update of `shares` by per-source `means` (OnlineConfig): exponentiated gradient on the gap to the
    mean over sources (0 where a mean is NaN), renormalized, blended with the uniform mix by `smoothing`."""
    known = ~np.isnan(means)
    gap = np.where(known, means - (means[known].mean() if known.any() else 0.0), 0.0)
    logits = np.log(shares) + step * gap
    weights = np.exp(logits - logits.max())
    return (1 - smoothing) * weights / weights.sum() + smoothing / len(shares)


def round_shares(config: OnlineConfig, candidates: Dataset, table: ScoreTable, shares: dict[str, float],
                 first: bool) -> tuple[dict[str, float], dict[str, float | None]]:
    """A round's shares and the per-source mean online scores: `shares` (the last round's) as they are in the first
    round or with `mix: fixed`, else moved by the means (`adapted_shares`)."""
    names = list(shares)
    means = source_means(candidates, table, config.select.mix.by, names)
    if config.mix == "adaptive" and not first:
        moved = adapted_shares(np.array([shares[name] for name in names]), means, config.mix_step,
                               config.mix_smoothing)
        shares = dict(zip(names, moved.tolist(), strict=True))
    return shares, {name: None if np.isnan(mean) else float(mean) for name, mean in zip(names, means, strict=True)}


def describe(values: np.ndarray) -> dict[str, float | int]:
    """Count, mean, std and quantiles of per-sample scores (per-turn lists summed, as selection reads them)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return {"count": 0}
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"count": int(len(values)), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(q[0]), "p10": float(q[1]), "p50": float(q[2]), "p90": float(q[3]), "max": float(q[4])}
