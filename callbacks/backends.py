"""Writing scalars, histograms and tables to the `report_to` backends a Trainer has active.

Only tensorboard and wandb are written to; other backends in `report_to` still get everything through the
Trainer's own logs. Tensorboard events go where transformers' `TensorBoardCallback` puts its runs
(`$TENSORBOARD_LOGGING_DIR`, else `<output_dir>/runs/`), in a `deita_train` run of their own so the two writers
never share an event file. Wandb logs go to the run transformers' `WandbCallback` started (online or offline),
stepped by `train/global_step` like the Trainer's own logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainingArguments

SUPPORTED = ("tensorboard", "wandb")


def tensorboard_dir(args: TrainingArguments) -> Path:
    """The folder this package's tensorboard events go to for a Trainer with `args`."""
    root = os.environ.get("TENSORBOARD_LOGGING_DIR")
    base = Path(root).expanduser() if root else Path(args.output_dir) / "runs"
    return base / "deita_train"


class ReportWriter:
    """Writes to every supported backend in `args.report_to`; call on the main process only.

    Raises when wandb is in `report_to` but no wandb run is active: the Trainer's `WandbCallback` starts it in
    its own `on_train_begin`, which runs before any callback passed to the Trainer.
    """

    def __init__(self, args: TrainingArguments) -> None:
        report_to = list(args.report_to or [])
        self.backends = [name for name in SUPPORTED if name in report_to]
        self.tensorboard = None
        self.wandb = None
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(tensorboard_dir(args)))
        if "wandb" in self.backends:
            import wandb

            if wandb.run is None:
                raise RuntimeError("report_to includes wandb but no wandb run is active; pass the callback to a "
                                   "Trainer (its WandbCallback starts the run) or call wandb.init() first")
            self.wandb = wandb

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One scalar per tag."""
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({**values, "train/global_step": step})

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        """The distribution of `values` (finite floats)."""
        if self.tensorboard is not None:
            self.tensorboard.add_histogram(tag, values, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({tag: self.wandb.Histogram(values.tolist()), "train/global_step": step})

    def table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table: a markdown table in tensorboard's text tab, a `wandb.Table` in wandb."""
        if self.tensorboard is not None:
            self.tensorboard.add_text(tag, markdown_table(columns, rows), step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({tag: self.wandb.Table(columns=columns, data=rows), "train/global_step": step})

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; cell newlines become `<br>` and pipes are escaped so each row stays one line."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
