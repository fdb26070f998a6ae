"""Name -> class registries for the things a recipe picks by name (scorers, strategies, callbacks)."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from deita_train.recipe.errors import RecipeError

T = TypeVar("T")


class Registry(Generic[T]):
    """A plain mapping from a recipe name to a class, with a helpful miss.

    Args:
        kind: what the entries are, used in messages (`scorer`, `strategy`).
        names_classes: set each registered class's `name` to its registry name (off for config classes, which may
            register under several names).
    """

    def __init__(self, kind: str, names_classes: bool = True) -> None:
        self.kind = kind
        self.names_classes = names_classes
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str):
        """Class decorator adding the class under `name`; a name registered twice is an error."""

        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(
                    f"{self.kind} {name!r} registered twice: {self._entries[name].__name__}, {cls.__name__}"
                )
            self._entries[name] = cls
            if self.names_classes:
                cls.name = name
            return cls

        return add

    def get(self, name: str, key: str) -> type[T]:
        """The class registered as `name`; `key` is the recipe key named in the error."""
        if name not in self._entries:
            raise RecipeError([f"{key}: unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}"])
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def did_you_mean(word: str, known) -> str:
    """`; did you mean 'x'? known: a, b, c` for a miss among `known`."""
    known = sorted(known)
    hint = difflib.get_close_matches(str(word), known, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"{suggestion} known: {', '.join(known)}"
