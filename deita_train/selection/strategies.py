"""Every strategy class, registered on `STRATEGIES` (importing this loads torch and datasets)."""

from deita_train.selection import dedup, deita, facility, ifd, kcenter, simple  # noqa: F401  (register)
from deita_train.selection.base import STRATEGIES

__all__ = ["STRATEGIES"]
