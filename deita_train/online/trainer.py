"""TRL's SFTTrainer with an online-selection sampler: the data loader is built once, the rounds change what
its sampler yields (see `sampler.py`), and the optimizer, scheduler and step count carry on untouched."""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset
from transformers import Trainer
from trl import SFTTrainer

from deita_train.online.callback import OnlineSelectionCallback
from deita_train.online.config import OnlineConfig
from deita_train.online.sampler import OnlineSampler

logger = logging.getLogger(__name__)


class OnlineSFTTrainer(SFTTrainer):
    """An `SFTTrainer` training on `candidates` (with `id`), re-selected by `online` rounds written under
    `online_dir`. Rows TRL drops while preparing the data (nothing left to train on after truncation) are not
    candidates; the others are re-selected by their position in the trainer's `train_dataset`."""

    def __init__(self, *args, online: OnlineConfig, candidates: Dataset, online_dir: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.is_fsdp_enabled:  # re-scoring calls the unwrapped decoder, which FSDP shards: not supported yet
            raise ValueError("online selection runs under DDP or DeepSpeed, not FSDP; launch with another config")
        position = {row_id: i for i, row_id in enumerate(candidates["id"])}
        trainable = candidates.select([position[row_id] for row_id in self.train_dataset["id"]])
        if len(trainable) < len(candidates):
            logger.warning("online selection: %d of %d candidates have no assistant token left after truncation "
                           "(sft.max_length); they are not re-selected", len(candidates) - len(trainable),
                           len(candidates))
        budget = online.select.options.budget
        if budget > len(trainable):
            raise ValueError(f"online.select.budget: {budget} is more than the {len(trainable)} trainable candidates "
                             "(the selected rows; when the recipe does not select, the scored pool or the pool)")
        self.online_sampler = OnlineSampler(budget, self.args.seed)
        self.add_callback(OnlineSelectionCallback(self, online, trainable, online_dir,
                                                  untrainable=len(candidates) - len(trainable)))

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> OnlineSampler:
        return self.online_sampler

    @property
    def zero3(self) -> bool:
        """Whether DeepSpeed ZeRO-3 partitions the weights (then re-scoring keeps forward passes in step)."""
        return self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3

    def log_online(self, logs: dict[str, float]) -> None:
        """Log a round through the Trainer, but not through `SFTTrainer.log`, which would take (and clear) the
        training metrics it averages between logging steps."""
        Trainer.log(self, logs)
