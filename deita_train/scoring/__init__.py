"""Scorers (one module each) on the `SCORERS` registry, and the engine that runs them."""

from deita_train.scoring import deita, embedding, ifd, length, ppl, reward  # noqa: F401  (register the scorers)
from deita_train.scoring.base import SCORERS, Score, Scorer, ScorerConfig, ScoringContext, register_scorer

__all__ = ["SCORERS", "Score", "Scorer", "ScorerConfig", "ScoringContext", "register_scorer"]
