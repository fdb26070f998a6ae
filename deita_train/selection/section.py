"""The `select:` and `hub:` sections: parsed by the strategies' config classes and checked before anything runs:
option ranges, the eval sets `decontaminate` reads, and every filter and score expression compiled and its columns
resolved against the columns the run will have (the pool's fields, the scorers' columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deita_train.data.section import pool_columns
from deita_train.recipe.errors import RecipeError
from deita_train.recipe.sections import Section
from deita_train.recipe.strict import build, convert
from deita_train.registry import did_you_mean
from deita_train.scoring.section import scored_columns
from deita_train.selection.config import STRATEGY_CONFIGS, DecontaminateConfig, HubSection, MixConfig, SelectConfig
from deita_train.selection.expressions import Expression

COMMON_KEYS = ("strategy", "filters", "decontaminate", "mix")


def parse_select(raw: Any, problems: list[str], key: str = "select") -> SelectConfig | None:
    """`select:` (or `online.select:`) is `strategy`, optional `filters`, `mix` and `decontaminate` (`select:` only:
    online selection re-selects among rows the select stage kept, or the whole pool), and the strategy's options."""
    if not isinstance(raw, dict) or "strategy" not in raw:
        problems.append(f"{key}: expected a mapping with `strategy` (one of {', '.join(STRATEGY_CONFIGS.names())})")
        return None
    try:
        config_class = STRATEGY_CONFIGS.get(raw["strategy"], f"{key}.strategy")
    except RecipeError as error:
        problems += error.problems
        return None
    before = len(problems)
    filters = convert(raw.get("filters", []), list[str], f"{key}.filters", problems)
    decontaminate = None
    if key != "select" and "decontaminate" in raw:
        problems.append(f"{key}.decontaminate: decontamination runs in the select stage: move it to "
                        "`select.decontaminate` (strategy `random` without a budget keeps every clean row)")
    elif raw.get("decontaminate") is not None:
        decontaminate = build(DecontaminateConfig, raw["decontaminate"], f"{key}.decontaminate", problems)
    mix = None if raw.get("mix") is None else build(MixConfig, raw["mix"], f"{key}.mix", problems)
    options = build(config_class, {k: v for k, v in raw.items() if k not in COMMON_KEYS}, key, problems)
    if len(problems) > before:
        return None
    return SelectConfig(strategy=raw["strategy"], options=options, filters=filters, decontaminate=decontaminate,
                        mix=mix, raw=raw)


def expression_problems(config: SelectConfig, key: str, columns: set[str] | None) -> list[str]:
    """Every filter and score expression compiled, and (when the columns are known) every name it reads resolved;
    every embedding column and the `mix.by` column resolved too."""
    texts = {f"{key}.filters.{i}": text for i, text in enumerate(config.filters)}
    texts |= {f"{key}.{option}": text for option, text in config.options.expressions().items()}
    problems, names = [], []
    for where, text in texts.items():
        try:
            expression = Expression(text, where)
        except RecipeError as error:
            problems += error.problems
            continue
        names += [(where, f"{text!r}: no column", name) for name in sorted(expression.columns)]
    names += [(f"{key}.{option}", "no column", column) for option, column in config.options.vector_columns().items()]
    if config.mix is not None:
        names.append((f"{key}.mix.by", "no column", config.mix.by))
    if columns is not None:
        problems += [f"{where}: {what} {name!r}{did_you_mean(name, columns)} (the pool's fields, read from its first "
                     "records, and the scorers' columns)" for where, what, name in names if name not in columns]
    return problems


def select_columns(recipe: Any) -> set[str] | None:
    """The columns selection will see: the pool's and the scorers'; None when the pool's cannot be known up front."""
    columns = pool_columns(recipe.pool)
    return None if columns is None else columns | scored_columns(recipe.score)


def mix_problems(config: SelectConfig, key: str, recipe: Any) -> list[str]:
    """The shares' own checks; with `by: source_file` and a pool of local files, every source among the pool's."""
    mix = config.mix
    if mix is None:
        return []
    problems = mix.problems(f"{key}.mix")
    paths = [Path(source.path).expanduser() for source in recipe.pool or []]
    if mix.by == "source_file" and paths and all(path.exists() for path in paths):
        names = {path.name for path in paths}  # a row's `source_file`: its file's name
        problems += [f"{key}.mix.shares.{name}: no pool source is named {name!r}{did_you_mean(name, names)} (a "
                     "row's source_file is its file's name)" for name in mix.shares if name not in names]
    return problems


def select_problems(config: SelectConfig, recipe: Any) -> list[str]:
    problems = [] if recipe.pool else ["pool: required by the select stage: list at least one source"]
    problems += config.options.problems("select") + mix_problems(config, "select", recipe)
    if config.mix is not None and config.options.budget is None:
        problems.append("select.budget: `mix` divides the budget between the sources: give a row count")
    if config.decontaminate is not None:
        problems += config.decontaminate.problems("select.decontaminate")
    return problems + expression_problems(config, "select", select_columns(recipe))


def parse_hub(raw: Any, problems: list[str]) -> HubSection | None:
    return build(HubSection, raw or {}, "hub", problems)


def hub_problems(config: HubSection, recipe: Any) -> list[str]:
    if recipe.select is None:
        return ["hub.dataset_id: pushes the selected dataset, but the recipe has no select stage"]
    return []


SELECT = Section(parse=parse_select, problems=select_problems)
HUB = Section(parse=parse_hub, problems=hub_problems)
