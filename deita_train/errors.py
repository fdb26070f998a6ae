"""The base of every error of the user's making: the CLI prints its message and exits 2, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A recipe, data, missing input or refusal the user can fix; `str()` says what and how, naming key or record."""
