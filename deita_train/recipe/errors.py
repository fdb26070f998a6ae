"""The one error type for bad recipes: every problem, one per line, each naming its key."""

from __future__ import annotations

from deita_train.errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe that cannot run; `problems` holds one message per problem, each starting with its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
