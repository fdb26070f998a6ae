"""Trainer callbacks, installed as `deita_train.callbacks`, each registered under the name a recipe uses.

- `score_logger` (`ScoreLoggerCallback`): pool vs selected score distributions at train start.
- `eval` (`EvalCallback`): held-out loss, MT-Bench generations, judged score every N steps.
- `selection_stats` (`SelectionStatsCallback`): mean scores of the rows in each step's batches.

A recipe's `callbacks:` list goes through `parse_callbacks` (validation) and `instantiate_callbacks`, or
both at once through `build_callbacks`.
"""

from deita_train.callbacks.base import (
    CALLBACKS,
    CallbackConfig,
    CallbackContext,
    RecipeCallback,
    build_callbacks,
    instantiate_callbacks,
    parse_callbacks,
)
from deita_train.callbacks.eval import EvalCallback, EvalConfig
from deita_train.callbacks.score_logger import ScoreLoggerCallback, ScoreLoggerConfig
from deita_train.callbacks.selection_stats import SelectionStatsCallback, SelectionStatsConfig

__all__ = [
    "CALLBACKS", "CallbackConfig", "CallbackContext", "RecipeCallback", "build_callbacks", "instantiate_callbacks",
    "parse_callbacks", "EvalCallback", "EvalConfig", "ScoreLoggerCallback", "ScoreLoggerConfig",
    "SelectionStatsCallback", "SelectionStatsConfig",
]
