"""Selection strategies (registered on `STRATEGIES`) and the select stage.

Importing the package is light: the recipe checks (`config.py`, `section.py`) import no strategy. `STRATEGIES`
loads the strategy modules (torch, datasets) when first read (PEP 562).
"""

__all__ = ["STRATEGIES"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'deita_train.selection' has no attribute {name!r}")
    from deita_train.selection import strategies

    return strategies.STRATEGIES
