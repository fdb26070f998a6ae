"""Per-batch selection (`online.every: batch`): each optimizer step draws `batch_ratio` (k) times its batch, scores
every drawn row with the current weights in a no-grad forward pass, and trains on the top 1/k.

The score of a row is its training loss: the mean of its loss tokens' negative log-likelihood under the model as it
is at that step (the rows the model has learned least first). With `online.batch_score: ifd` it is that loss over
the loss of the same tokens read alone (after BOS, when the tokenizer has one): the instruction-following
difficulty of the row as it is batched, every loss token of a multi-turn row counted as one answer (scoring takes
a second no-grad pass). With `online.batch_reference: EXPR` (an expression over the candidates' columns, one
number per row) the row's value is subtracted: RHO-LOSS inside each batch
(Mindermann et al., 2022), with EXPR the irreducible loss scored offline, e.g. `mean(reference_loss)` from the
`loss` scorer under the irreducible-loss model. The value travels with its row as a `batch_reference` column,
taken out of the rows by the collator (as `sample_weight` is) and out of the batch before training.

Under `accelerate launch` the choice is over the global draw: every process scores its k x b rows, the scores are
gathered, one ranking keeps the global top 1/k (ties: the earlier drawn row), and each process trains the kept rows
it drew. A process may then hold more or fewer than b rows; the loss is normalized by the kept rows' loss tokens
counted over all processes (the Trainer's `num_items_in_batch`), so the gradient is that of one process training
all kept rows. A process that kept none trains one fully masked row (no loss, no gradient) so that every process
runs the same forward passes (ZeRO-3 gathers weights inside them). Gradient accumulation counts kept rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTTrainer

from deita_train.online.config import OnlineConfig
from deita_train.recipe.errors import RecipeError
from deita_train.selection.scores import sample_scores
from deita_train.training.carried_columns import FloatColumnCollator, with_column

IGNORE = -100
REFERENCE = "batch_reference"


def with_reference(rows: Dataset, expression: str) -> Dataset:
    """`rows` with their `batch_reference` column: `expression` on each row; a null names the row's id."""
    values = sample_scores(rows, expression, "online.batch_reference")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        where = f"the row with id {rows[row]['id']}" if "id" in rows.column_names else f"row {row}"
        raise RecipeError([f"online.batch_reference: {expression!r} is {values[row]} for {where} ({len(bad)} of "
                           f"{len(values)} rows); every row needs a finite reference"])
    return rows.add_column(REFERENCE, values.tolist())


class BatchSelectingSFTTrainer(SFTTrainer):
    """An `SFTTrainer` whose data loader draws k x the batch, of which each step trains on the top 1/k."""

    def __init__(self, *args, online: OnlineConfig, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ratio = online.batch_ratio
        self.ifd = online.batch_score == "ifd"
        self.data_collator = FloatColumnCollator(self.data_collator, REFERENCE)
        self.batch_metrics: dict[str, list[float]] = {"drawn": [], "kept": [], "cut": [], "kept_mean": []}

    def _set_signature_columns_if_needed(self) -> None:
        """Keep `batch_reference` when the Trainer removes the columns the model does not take."""
        super()._set_signature_columns_if_needed()
        self._signature_columns = with_column(self._signature_columns, REFERENCE)

    def get_train_dataloader(self):
        """The Trainer's loader, drawing `batch_ratio` times the per-device batch."""
        per_device = self._train_batch_size
        self._train_batch_size = per_device * self.ratio
        try:
            return super().get_train_dataloader()
        finally:
            self._train_batch_size = per_device

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The step's drawn batches, each cut to its kept rows; the items to normalize by count kept rows only."""
        drawn, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        kept = [self.keep_top(batch) for batch in drawn]
        return super().get_batch_samples(iter(kept), len(kept), device)

    @torch.no_grad()
    def row_scores(self, batch: dict[str, Any]) -> torch.Tensor:
        """Each row's score under the current weights: its mean loss-token negative log-likelihood, or that over the
        same tokens' alone (`ifd`); minus its reference (-inf: no loss token)."""
        inputs = {name: batch[name] for name in ("input_ids", "attention_mask", "position_ids") if name in batch}
        scores, mask = self.mean_losses(inputs, batch["labels"])
        if self.ifd:
            scores = scores / self.mean_losses(*self.answers_alone(batch))[0]
        if REFERENCE in batch:
            scores = scores - batch[REFERENCE].to(scores.device)
        return torch.where(mask.any(1), scores, torch.full_like(scores, float("-inf")))  # nothing to learn: last

    def mean_losses(self, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's mean negative log-likelihood of its `labels` tokens, and the loss-token mask."""
        logits = self.model(**inputs, use_cache=False).logits[:, :-1].float()
        labels = labels[:, 1:].to(logits.device)
        losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none")
        mask = labels != IGNORE
        return (losses * mask).sum(1) / mask.sum(1).clamp_min(1), mask

    def answers_alone(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each row's loss tokens with nothing before them but BOS (when the tokenizer has one), right-padded, as
        model inputs and labels."""
        bos = getattr(self.processing_class, "bos_token_id", None)
        pad = self.processing_class.pad_token_id if self.processing_class.pad_token_id is not None else 0
        rows = [ids[labels != IGNORE] for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)]
        rows = [torch.cat([ids.new_tensor([bos]), ids]) if bos is not None else ids for ids in rows]
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long, device=batch["input_ids"].device)
        labels = torch.full_like(input_ids, IGNORE)
        attention = torch.zeros_like(input_ids)
        first = 1 if bos is not None else 0  # BOS is context, not an answer token
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = ids
            labels[i, first : len(ids)] = ids[first:]
            attention[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention}, labels

    def keep_top(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The rows of `batch` (this process's share of the draw) in the global top 1/k, without their reference."""
        scores = self.row_scores(batch)
        batch = {name: value for name, value in batch.items() if name != REFERENCE}
        state = self.accelerator.state
        sizes = self.accelerator.gather(torch.tensor([len(scores)], device=scores.device))
        padded = self.accelerator.pad_across_processes(scores, pad_index=float("nan"))
        everyone = self.accelerator.gather(padded)
        width = padded.shape[0]
        valid = torch.cat([torch.arange(width, device=everyone.device) < size for size in sizes])
        drawn = int(sizes.sum())
        keep = max(1, drawn // self.ratio)
        order = torch.argsort(-torch.where(valid, everyone, float("-inf")), stable=True)[:keep]
        mine = order[(order >= state.process_index * width) & (order < (state.process_index + 1) * width)]
        rows = (mine - state.process_index * width).sort().values
        kept_scores = everyone[order]
        self.record(drawn, keep, kept_scores)
        if len(rows) == 0:  # keep this process's forward passes in step with the others': one row, nothing to learn
            rows = torch.zeros(1, dtype=torch.long, device=scores.device)
            return {**take(batch, rows), "labels": torch.full_like(batch["labels"][:1], IGNORE)}
        return take(batch, rows)

    def record(self, drawn: int, kept: int, kept_scores: torch.Tensor) -> None:
        finite = kept_scores[torch.isfinite(kept_scores)]
        self.batch_metrics["drawn"].append(drawn)
        self.batch_metrics["kept"].append(kept)
        if len(finite):
            self.batch_metrics["cut"].append(float(finite.min()))
            self.batch_metrics["kept_mean"].append(float(finite.mean()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs gain `online/batch/*`: rows drawn and kept per micro-batch, the score cut (the lowest kept
        score) and the kept rows' mean score, averaged since the last log."""
        if "loss" in logs and self.batch_metrics["drawn"]:
            for name, values in self.batch_metrics.items():
                if values:
                    logs[f"online/batch/{name}"] = sum(values) / len(values)
                values.clear()
        super().log(logs, start_time)


def take(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The `rows` of every per-row tensor (and list) of a collated batch."""
    out = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch["input_ids"].shape[0]:
            out[name] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == batch["input_ids"].shape[0]:
            out[name] = [value[i] for i in rows.tolist()]
        else:
            out[name] = value
    return out
