"""Recipe loading: YAML with `extends:`, dotted `KEY=VALUE` overrides, then each section parsed and checked by the
stage that owns it (through a `SectionTable`).

Nothing here loads a model or data; `load_recipe` raises one `RecipeError` listing every problem.

Merging rule: a child recipe (or an override) merges mappings key by key, except a block whose type changes: when
`strategy` (of `select`, `online.select`) or `type` (of a scorer) differs from the base's, the child's block
replaces the base's whole, so no option meant for the old type leaks into the new one.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import yaml

from deita_train.recipe.errors import RecipeError
from deita_train.recipe.schema import Recipe
from deita_train.recipe.sections import SectionTable, owner
from deita_train.recipe.strict import convert
from deita_train.registry import did_you_mean

TOP_LEVEL = ("output_dir", "seed")
TYPE_KEYS = ("strategy", "type")  # a block whose value of one of these changes starts afresh


def load_recipe(path: str | Path, overrides: typing.Sequence[str], sections: SectionTable) -> Recipe:
    """Read, merge, override, parse and check the recipe at `path`, each section by its owner in `sections`."""
    data = read_with_extends(Path(path), seen=())
    for item in overrides:
        apply_override(data, item)
    return parse_recipe(data, sections)


def read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The YAML at `path`, deep-merged over the recipe it `extends:` (relative to `path`'s folder)."""
    if not path.is_file():
        raise RecipeError([f"recipe: file not found: {path}"])
    if path.resolve() in seen:
        raise RecipeError([f"extends: cycle through {path}"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError([f"recipe: {path} is not valid YAML: {error}"]) from None
    if not isinstance(data, dict):
        raise RecipeError([f"recipe: {path} must be a mapping of sections, got {type(data).__name__}"])
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError([f"extends: expected a path to a base recipe, got {base!r}"])
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        raise RecipeError([f"extends: base recipe not found: {base_path} (paths are relative to {path})"])
    return deep_merge(read_with_extends(base_path, seen + (path.resolve(),)), data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key (unless their type changes, see the module docstring); anything else in
    `override` replaces the base value."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not changes_type(merged[key], value):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def changes_type(base: dict[str, Any], override: dict[str, Any]) -> bool:
    """Whether `override` gives the block another `strategy` or `type` than `base` has."""
    return any(key in base and key in override and base[key] != override[key] for key in TYPE_KEYS)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=VALUE` override in place (VALUE read as YAML: `false`, `3`, `[a, b]`); `~a.b` removes a key."""
    if item.startswith("~") and "=" not in item:
        *parents, leaf = item[1:].split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise RecipeError([f"{item}: no key {item[1:]!r} to remove"])
        del node[leaf]
        return
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise RecipeError([f"{item!r}: overrides are KEY=VALUE, e.g. select.budget=6000"])
    *parents, leaf = key.split(".")
    node: Any = data
    for depth, part in enumerate(parents):
        where = ".".join(parents[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError([f"{key}: {where} is not an index of a list of {len(node)}"])
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise RecipeError([f"{key}: {where} is a value, not a section"])
    value = yaml.safe_load(text)
    if leaf in TYPE_KEYS and isinstance(node, dict) and leaf in node and node[leaf] != value:
        node.clear()  # the block's type changes: the old type's options go (see the module docstring)
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise RecipeError([f"{key}: {leaf} is not an index of a list of {len(node)}"])
        node[int(leaf)] = value
    else:
        node[leaf] = value


def parse_recipe(data: dict[str, Any], sections: SectionTable) -> Recipe:
    """Parse every present section with its owner, then (when all parsed) run every section's checks."""
    problems = [f"{key}: unknown section{did_you_mean(key, (*TOP_LEVEL, *sections))}"
                for key in data if key not in TOP_LEVEL and key not in sections]
    if "output_dir" not in data:
        problems.append("output_dir: required key is missing")
    seed = convert(data.get("seed", 42), int, "seed", problems)
    present = [name for name in sections if name in data]
    parsed = {name: owner(sections, name).parse(data[name], problems) for name in present}
    recipe = Recipe(
        output_dir=Path(str(data.get("output_dir", ""))),
        seed=seed if seed is not None else 42,
        raw=data,
        **{name: value for name, value in parsed.items() if value is not None},
    )
    if not problems:
        for name in present:
            problems += owner(sections, name).problems(parsed[name], recipe)
    if problems:
        raise RecipeError(problems)
    return recipe
