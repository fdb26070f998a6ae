"""Per-sample loss weights: `sft.sample_weight` / `dpo.sample_weight`, an expression over each training row's columns
(evaluated like a select score: `selection/scores.py`), normalized to mean 1 over the rows given to the trainer.

The weight travels with its row as a `sample_weight` column: TRL's dataset preparation keeps extra columns, the
Trainer keeps it among the signature columns, and `FloatColumnCollator` turns it into one float per row before TRL's
collator sees the rows. The loss stays TRL's own: `compute_loss` hands TRL the model wrapped so that the per-token
log-probabilities of its fused LM head come back weighted (`weigh`), and TRL reduces them as always.

- SFT: `loss = sum_t w_row(t) * nll_t / N`, with N TRL's normalizer (the batch's loss tokens, or `num_items_in_batch`
  under gradient accumulation; zero-weight rows' tokens count). Uniform weights give TRL's loss exactly.
- DPO: the gradient of `(1/B) sum_b w_b * loss_b` over the B pairs. A pair's loss is not linear in its
  log-probabilities, so the weight scales their gradient only (`x * w + x.detach() * (1 - w)`, equal to `x`): the
  logged loss is TRL's unweighted mean. Per-pair losses only (`preconditions.sample_weight_problems`).

Weights are cast to the log-probabilities' dtype (bfloat16 rounds them to 3 significant digits). Evaluation rows carry
no weight: the eval loss is TRL's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.scores import sample_scores
from deita_train.training.carried_columns import FloatColumnCollator, with_column
from deita_train.training.preconditions import sample_weight_problems

WEIGHT = "sample_weight"


def sample_weights(rows: Dataset, expression: str, key: str) -> list[float]:
    """`expression` on every row, scaled to mean 1. A RecipeError names the first row (by `id`) whose weight is null,
    negative or infinite, or says that every weight is 0."""
    values = sample_scores(rows, expression, key)
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        row = int(bad[0])
        where = f"the row with id {rows[row]['id']}" if "id" in rows.column_names else f"row {row}"
        value = "null (a column it reads is null there)" if np.isnan(values[row]) else values[row]
        raise RecipeError([f"{key}: {expression!r} is {value} for {where} ({bad.size} of {len(values)} rows); "
                           "a weight must be a finite number >= 0"])
    if not values.any():
        raise RecipeError([f"{key}: {expression!r} is 0 for every training row; at least one weight must be > 0"])
    return (values * (len(values) / values.sum())).tolist()


def weighted(train: Dataset, rows: Dataset, section: str, expression: str, args: dict[str, Any],
             trainer_class: Callable[..., Any]) -> tuple[Dataset, Callable[..., Any]]:
    """`train` with its `sample_weight` column (`expression` on `rows`, the same rows with all their columns), and
    `trainer_class` weighing its loss by it. Refused when the stage's options bypass the weighted loss."""
    if problems := sample_weight_problems(section, args):
        raise RecipeError(problems)
    weights = sample_weights(rows, expression, f"{section}.sample_weight")
    mixin = SFTWeights if section == "sft" else DPOWeights
    return train.add_column(WEIGHT, weights), with_weights(trainer_class, mixin)


def with_weights(trainer_class: Callable[..., Any], mixin: type) -> Callable[..., Any]:
    """`trainer_class` with `mixin` in front; a `functools.partial` of a class (online selection's) stays one."""
    if isinstance(trainer_class, partial):
        return partial(with_weights(trainer_class.func, mixin), *trainer_class.args, **trainer_class.keywords)
    return type(f"Weighted{trainer_class.__name__}", (mixin, trainer_class), {})


class WeightedForward:
    """`model`, whose fused-LM-head outputs come back with `log_probs` as `weigh(log_probs, forward kwargs)`."""

    def __init__(self, model: torch.nn.Module, weigh: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]) -> None:
        self.model = model
        self.weigh = weigh

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.model(*args, **kwargs)
        if kwargs.get("fused_lm_head"):
            outputs.log_probs = self.weigh(outputs.log_probs, kwargs)
        return outputs


class WeightedLoss:
    """Trainer mixin: a training batch's `sample_weight` weighs its rows' per-token log-probabilities (`weigh`) inside
    the trainer's own loss; a batch without it (evaluation) gets the trainer's loss unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parallel = getattr(self.accelerator, "parallelism_config", None)
        if parallel is not None and (parallel.sp_enabled or parallel.cp_enabled):
            raise ValueError("sample_weight: not with sequence or context parallelism, whose loss does not come from "
                             "the per-token log-probabilities it weighs")
        self.data_collator = FloatColumnCollator(self.data_collator, WEIGHT)

    def _set_signature_columns_if_needed(self) -> None:
        """Keep `sample_weight` when the Trainer removes the columns the model does not take."""
        super()._set_signature_columns_if_needed()
        self._signature_columns = with_column(self._signature_columns, WEIGHT)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if WEIGHT not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        weigh = partial(self.weigh, weights=inputs.pop(WEIGHT))
        return super().compute_loss(WeightedForward(model, weigh), inputs, return_outputs, num_items_in_batch)

    def weigh(self, log_probs: torch.Tensor, inputs: dict[str, Any], weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SFTWeights(WeightedLoss):
    """SFT: each loss token's log-probability times its row's weight; TRL's normalizer unchanged."""

    def weigh(self, log_probs: torch.Tensor, inputs: dict[str, Any], weights: torch.Tensor) -> torch.Tensor:
        return log_probs * token_weights(weights, inputs)[:, 1:].to(log_probs.dtype)  # log_probs[t]: label t + 1


class DPOWeights(WeightedLoss):
    """DPO: pair b's log-probabilities (chosen and rejected) pass w_b times their gradient on, at unchanged value."""

    def weigh(self, log_probs: torch.Tensor, inputs: dict[str, Any], weights: torch.Tensor) -> torch.Tensor:
        if log_probs.size(0) != 2 * len(weights):
            raise ValueError(f"dpo.sample_weight: expected the chosen then the rejected rows of {len(weights)} pairs, "
                             f"got {log_probs.size(0)} rows")
        w = weights.repeat(2)[:, None].to(log_probs.dtype)  # the batch holds the chosen rows, then the rejected
        return log_probs * w + log_probs.detach() * (1 - w)


def token_weights(weights: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
    """The weight of the row each position belongs to: rows padded side by side (`attention_mask`), or one
    padding-free row of samples end to end, each starting at position id 0 (the padding after them has label -100)."""
    if "attention_mask" in inputs:
        return weights[:, None].expand_as(inputs["attention_mask"])
    owner = (inputs["position_ids"] == 0).cumsum(-1) - 1
    return weights[owner.clamp(max=len(weights) - 1)]
