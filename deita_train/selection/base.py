"""The strategy contract and registry. A strategy orders a scored dataset and returns the kept rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Dataset

from deita_train.registry import Registry
from deita_train.selection.expressions import Expression


@dataclass
class StrategyConfig:
    """Options every strategy takes; a strategy's own config subclasses this."""

    budget: int | None = field(default=None, metadata={"help": "Rows to keep; None keeps all that pass."})


@dataclass
class SelectConfig:
    """`select:` — filters, then one strategy with its options."""

    strategy: str
    options: StrategyConfig
    filters: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class Strategy(ABC):
    """Selects rows of a scored dataset. Subclasses set `config_class` and implement `select`."""

    name: ClassVar[str]
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, config: StrategyConfig, seed: int) -> None:
        self.config = config
        self.seed = seed

    @abstractmethod
    def select(self, scored: Dataset) -> list[int]:
        """Positions (0-based rows of `scored`) of the kept rows, in selection order."""

    def columns(self) -> list[str]:
        """The columns this strategy reads: those of its config's `score` expression and its `embedding` column,
        where the config has them. A row with a null in any of them counts as unscored."""
        score, embedding = getattr(self.config, "score", None), getattr(self.config, "embedding", None)
        used = Expression(score, "select.score").columns if score else set()
        return sorted(used | {embedding} if embedding else used)

    def details(self) -> dict[str, Any]:
        """What the strategy found (e.g. duplicates), recorded in `selection.json` after it ran."""
        return {}

    def parameters(self) -> dict[str, Any]:
        """What `selection.json` records of this strategy."""
        return {"strategy": self.name, **vars(self.config)}


STRATEGIES: Registry[Strategy] = Registry("strategy")
register_strategy = STRATEGIES.register
