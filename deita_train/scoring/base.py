"""The scorer contract and registry. A new scorer is one class: a config dataclass and `score_batch`.

The engine (`engine.py`), not the scorer, orders, batches, shards, caches and writes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from deita_train.registry import Registry
from deita_train.scoring.config import ScorerConfig


@dataclass
class ScoringContext:
    """What a scorer may need from the recipe besides its own options."""

    model_name_or_path: str | None = None  # the recipe's model (default tokenizer); each scorer has its own
    # `trust_remote_code`, never inherited from the recipe's model
    seed: int = 42


@dataclass(frozen=True)
class Score:
    """One record's score: a value, or None with the reason it could not be scored.

    `value` is a float (per sample), a list of floats (one per assistant turn) or a float vector.
    `extras` holds inspection columns, written as `<column>_<name>`.
    """

    value: float | list[float] | np.ndarray | None
    reason: str | None = None
    truncated: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unscorable(cls, reason: str) -> Score:
        return cls(value=None, reason=reason)

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError("a Score has either a value or a reason, never both or neither")


# A canonical pool row: `id`, `messages` [{role, content}], `source_file`, `source_row`, the record's other fields.
Record = dict[str, Any]


class Scorer(ABC):
    """Scores canonical pool records. Subclasses set `config_class` and implement `score_batch`."""

    name: ClassVar[str]
    config_class: ClassVar[type[ScorerConfig]] = ScorerConfig
    per_turn: ClassVar[bool] = False  # one float per assistant turn
    fields: ClassVar[tuple[str, ...]] = ()  # pool fields `score_batch` reads besides `id` and `messages`

    def __init__(self, config: ScorerConfig, context: ScoringContext) -> None:
        self.config = config
        self.context = context

    def models(self) -> list[str]:
        """Models and tokenizers this scorer reads; their identity is part of the engine's cache key."""
        return []

    def load(self) -> None:  # noqa: B027  (scorers without a model load nothing)
        """Load models and tokenizers; called once per process before the first batch."""

    def close(self) -> None:  # noqa: B027
        """Free what `load` took (models, GPU memory) before the next scorer or training."""

    @abstractmethod
    def score_batch(self, batch: list[Record]) -> list[Score]:
        """One Score per record, in order."""

    def score_table(self, rows: pa.Table) -> list[Score]:
        """One Score per row of `rows` (Arrow: `id`, `messages` and `fields`), in order: `score_batch` on them as
        Python records. A scorer that computes on Arrow columns overrides this and skips the records."""
        return self.score_batch(rows.to_pylist())


SCORERS: Registry[Scorer] = Registry("scorer")
register_scorer = SCORERS.register
