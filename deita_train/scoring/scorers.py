"""Every scorer class, registered on `SCORERS` (importing this loads torch and transformers)."""

from deita_train.scoring import deita, embedding, ifd, length, ppl, reward  # noqa: F401  (register the scorers)
from deita_train.scoring.base import SCORERS

__all__ = ["SCORERS"]
