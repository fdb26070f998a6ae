"""Selection strategies (registered on `STRATEGIES`) and the select stage."""

from deita_train.selection import dedup, deita, facility, ifd, kcenter, simple  # noqa: F401  (registers)
from deita_train.selection.base import STRATEGIES, SelectConfig, Strategy, StrategyConfig, register_strategy

__all__ = ["STRATEGIES", "SelectConfig", "Strategy", "StrategyConfig", "register_strategy"]
