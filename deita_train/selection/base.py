"""The strategy contract and registry. A strategy orders a scored dataset and returns the kept rows.

After `select`, a strategy tells the runner's funnel (see `runner.py`) what it did with its input: `unranked`
flags the rows it could not rank (a null or NaN where it reads), `details()` holds its counts, of which the
keys named in `removals` count rows it ranked and then removed, `removed` says which rows each removal took (with a
note per row, for the audit trail), and `budget` the rows it aimed for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, overload

import numpy as np
from datasets import Dataset

from deita_train.registry import Registry
from deita_train.selection.config import StrategyConfig
from deita_train.selection.expressions import Expression


@dataclass
class Removed:
    """The rows (positions in the strategy's input, ascending) one removal took, and a note per row saying why
    (e.g. the nearest selected row and the similarity)."""

    rows: np.ndarray
    notes: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.notes):
            raise ValueError(f"{len(self.rows)} removed rows but {len(self.notes)} notes")


class ScoreNotes(Sequence[str]):
    """`score 0.93 fails <cut>` for each of `rows` (positions in `scores`), each made when read: a cut that removes
    millions of rows holds no string per row (the audit reads them a part at a time)."""

    def __init__(self, scores: np.ndarray, rows: np.ndarray, cut: str | None) -> None:
        self.scores, self.rows, self.cut = scores, rows, cut

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self.note(row) for row in self.rows[index]]
        return self.note(self.rows[index])

    def note(self, row: int) -> str:
        return f"score {self.scores[row]:.6g} fails {self.cut}"


class Strategy(ABC):
    """Selects rows of a scored dataset. Subclasses set `config_class` and implement `select`."""

    name: ClassVar[str]
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    removals: ClassVar[tuple[str, ...]] = ()  # keys of `details()` counting rows ranked, then removed

    def __init__(self, config: StrategyConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.unranked: np.ndarray | None = None  # set by `select`: one flag per input row; None: all were ranked
        self.found: dict[str, Any] = {}  # set by `select`: what `details()` reports
        self.removed: dict[str, Removed] = {}  # set by `select`: each of `removals` -> the rows it took
        self.budget = config.budget  # rows aimed for; `select` resolves it where it depends on the data

    @abstractmethod
    def select(self, scored: Dataset) -> list[int]:
        """Positions (0-based rows of `scored`) of the kept rows, in selection order."""

    def columns(self) -> list[str]:
        """The columns this strategy reads: its config's `embedding` column, then those of its `score` expression,
        where the config has them. A row with a null in any of them counts as unscored (in `counts.scored`; the
        funnel counts an unranked row under the first of them null there)."""
        vectors = sorted(set(self.config.vector_columns().values()))
        used = {name for option, text in self.config.expressions().items()
                for name in Expression(text, f"select.{option}").columns}
        return vectors + sorted(used - set(vectors))

    def details(self) -> dict[str, Any]:
        """What the strategy found (e.g. duplicates), recorded in `selection.json` after it ran."""
        return self.found

    def parameters(self) -> dict[str, Any]:
        """What `selection.json` records of this strategy."""
        return {"strategy": self.name, **vars(self.config)}


STRATEGIES: Registry[Strategy] = Registry("strategy")
register_strategy = STRATEGIES.register
