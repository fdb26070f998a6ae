"""A training stage's held-out data: its own `eval_dataset` sources, or `eval_split` rows held out of its train rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset

from deita_train.data.sources import load_sources
from deita_train.training.config import EvalData


def hold_out(
    train: Dataset, stage: EvalData, section: str, seed: int, preference: bool = False
) -> tuple[Dataset, Dataset | None, dict[str, Any]]:
    """(train rows, eval rows or None, report). An `eval_split` draws its rows with `seed`; the train rows that
    remain keep their order."""
    if stage.eval_dataset:
        evaluation, data_report = load_sources(stage.eval_dataset, seed, preference=preference)
        return train, evaluation, {"eval_rows": len(evaluation), **data_report.to_dict()}
    if stage.eval_split is None:
        return train, None, {}
    split = stage.eval_split
    count = split if isinstance(split, int) else round(split * len(train))
    if not 1 <= count < len(train):
        raise ValueError(
            f"{section}.eval_split: {split} holds out {count} of {len(train)} train rows; it must leave at least one "
            f"row on each side: lower it or give {section}.eval_dataset sources instead"
        )
    held = np.random.default_rng(seed).permutation(len(train))[:count]
    keep = np.setdiff1d(np.arange(len(train)), held)
    return train.select(keep), train.select(np.sort(held)), {"eval_rows": count, "eval_split": split}
