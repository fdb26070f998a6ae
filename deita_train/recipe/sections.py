"""The contract between the recipe loader and the stages: each recipe section is read and checked by a `Section`
that the stage owning it provides. The loader is handed a table `section name -> "module:attribute"` and imports
an owner only when its section is present, so it names no stage itself and loads nothing a recipe does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def no_problems(config: Any, recipe: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Section:
    """How one recipe section is read and checked.

    Args:
        parse: `(raw YAML value, problems) -> typed config`; appends each problem (starting with its key) and
            returns None when it found any.
        problems: `(typed config, the whole Recipe) -> problems`: ranges, expressions, options of the chosen type,
            what the section needs from the other sections, missing files and models. Runs once every present
            section parsed cleanly.
    """

    parse: Callable[[Any, list[str]], Any]
    problems: Callable[[Any, Any], list[str]] = field(default=no_problems)


SectionTable = Mapping[str, str]  # section name -> "package.module:ATTRIBUTE" holding its `Section`


def owner(table: SectionTable, name: str) -> Section:
    """The `Section` of `name`, imported from the module the table names."""
    module, _, attribute = table[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
