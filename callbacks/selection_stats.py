"""`selection_stats`: the mean score of the rows in each training batch, as `selection/<column>_mean`.

Design. The trainer's batches hold token ids, not the rows' scores, and the sampler's order differs from the
dataset's (shuffling, sharding across processes, resumption). So the callback reads the rows' `id`s where a
batch is assembled: at train start it wraps the train dataloader's `collate_fn`, and the wrapper records the
`id`s of each batch (removing `id` before the Trainer's own collator sees the rows) in a queue. The Trainer
calls `on_substep_end` or `on_step_end` once per micro-batch, in the order the batches were collated (the
dataloader may collate one batch ahead, which leaves the order unchanged), so each hook takes one batch
from the queue. On each logging step the ids of all processes are gathered and the scores looked up by
`id` in `context.train_dataset` (the rows given to the trainer, with their score columns).

This needs `id` in the rows the collator receives: the train dataset keeps its `id` column and the Trainer
keeps unused columns (`remove_unused_columns: false`; TRL's SFT collator reads only the token columns), and
the collator runs in the main process (`dataloader_num_workers: 0`, TRL's default). Packing merges rows
and drops `id`, so it is refused with that message.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.distributed as dist
from accelerate.data_loader import DataLoaderAdapter
from deita_train.callbacks.backends import ReportWriter
from deita_train.callbacks.base import CallbackConfig, RecipeCallback, register_callback
from deita_train.callbacks.scores import row_scores, score_columns
from transformers import TrainerControl, TrainerState, TrainingArguments


@dataclass
class SelectionStatsConfig(CallbackConfig):
    """Options of `selection_stats`."""

    columns: list[str] | None = field(
        default=None, metadata={"help": "Score columns to follow; None follows every score column of the train data."}
    )
    every_steps: int = field(
        default=1, metadata={"help": "Log every N optimizer steps, averaging the rows of all batches since the last."}
    )


class IdRecordingCollator:
    """Wraps a collator: records each batch's `id`s into `batches`, then collates the rows without `id`."""

    def __init__(self, collate_fn, batches: deque) -> None:
        self.collate_fn = collate_fn
        self.batches = batches

    def __call__(self, rows: list[dict[str, Any]]):
        if rows and "id" not in rows[0]:
            raise ValueError(
                f"selection_stats: the training rows reaching the collator have no `id` (keys: {sorted(rows[0])}); "
                "keep `id` in the train dataset, set `remove_unused_columns: false` and `packing: false`"
            )
        self.batches.append([row["id"] for row in rows])
        return self.collate_fn([{k: v for k, v in row.items() if k != "id"} for row in rows])


@register_callback("selection_stats")
class SelectionStatsCallback(RecipeCallback):
    """Logs `selection/<column>_mean` (and `selection/<column>_unscored`) of the rows trained on, per step.

    Needs `context.train_dataset`: the rows given to the trainer, with `id` and score columns.
    """

    config_class = SelectionStatsConfig

    def __init__(self, config: SelectionStatsConfig, context) -> None:
        super().__init__(config, context)
        if config.every_steps < 1:
            raise ValueError(f"selection_stats.every_steps: must be at least 1, got {config.every_steps}")
        self.batches: deque[list[int]] = deque()
        self.pending: list[int] = []  # ids trained on since the last log
        self.writer: ReportWriter | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        data = self.context.train_dataset
        if data is None or "id" not in data.column_names:
            raise ValueError("selection_stats needs the train dataset with its `id` and score columns "
                             "(CallbackContext.train_dataset)")
        if args.dataloader_num_workers > 0:
            raise ValueError("selection_stats records batch ids in the collator, which runs in worker processes when "
                             f"dataloader_num_workers > 0 (got {args.dataloader_num_workers}); set it to 0")
        columns = self.config.columns if self.config.columns is not None else score_columns(data)
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise ValueError(f"selection_stats.columns: {missing} not in the train dataset ({data.column_names})")
        self.columns = columns
        self.scores = row_scores(data, columns)
        self.position = {row_id: i for i, row_id in enumerate(data["id"])}
        loader = kwargs["train_dataloader"]
        if isinstance(loader, DataLoaderAdapter):  # Accelerate's wrapper iterates its `base_dataloader`
            loader = loader.base_dataloader
        loader.collate_fn = IdRecordingCollator(loader.collate_fn, self.batches)
        if state.is_world_process_zero:
            self.writer = ReportWriter(args)

    def on_substep_end(self, args, state, control, **kwargs):
        self.pending += self.batches.popleft()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.pending += self.batches.popleft()
        if state.global_step % self.config.every_steps == 0:
            self.log(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def log(self, state: TrainerState) -> None:
        ids = gather_ids(self.pending)
        self.pending = []
        if self.writer is None:
            return
        rows = np.array([self.position[i] for i in ids], dtype=np.int64)
        values = {}
        for column in self.columns:
            batch = self.scores[column][rows]
            scored = batch[np.isfinite(batch)]
            values[f"selection/{column}_unscored"] = float(len(batch) - len(scored))
            if len(scored):
                values[f"selection/{column}_mean"] = float(scored.mean())
        values["selection/rows"] = float(len(rows))
        self.writer.scalars(values, state.global_step)


def gather_ids(ids: list[int]) -> list[int]:
    """The ids of every process (one process: `ids` itself)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids
    parts: list[list[int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, ids)
    return [i for part in parts for i in part]
