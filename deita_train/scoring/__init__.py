"""Scorers (one module each) on the `SCORERS` registry, and the engine that runs them.

Importing the package is light: the recipe checks (`config.py`, `section.py`) import no scorer. The names below
load the scorer modules (torch, transformers) when first read (PEP 562).
"""

__all__ = ["SCORERS", "Score", "Scorer", "ScorerConfig", "ScoringContext", "register_scorer"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'deita_train.scoring' has no attribute {name!r}")
    from deita_train.scoring import base, config, scorers

    return getattr(config if name == "ScorerConfig" else scorers if name == "SCORERS" else base, name)
