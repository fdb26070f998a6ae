"""The `online:` section: typed by `OnlineConfig`, its `select` by the selection stage's parser and its `scorer`
by the scorer configs (only scorers that can run on the model being trained), then checked against the sft stage
it runs inside."""

from __future__ import annotations

from typing import Any

from deita_train.online.config import ONLINE_SCORERS, OnlineConfig
from deita_train.recipe.errors import RecipeError
from deita_train.recipe.sections import Section
from deita_train.recipe.strict import build
from deita_train.registry import did_you_mean
from deita_train.scoring.section import parse_scorer
from deita_train.selection.expressions import Expression
from deita_train.selection.section import expression_problems, mix_problems, parse_select, select_columns


def parse_online(raw: Any, problems: list[str]) -> OnlineConfig | None:
    before = len(problems)
    if not isinstance(raw, dict):
        problems.append(f"online: expected a mapping with `select` and options, got {raw!r}")
        return None
    config = build(OnlineConfig, raw, "online", problems)
    if config is None:
        return None
    if "select" in raw:
        config.select = parse_select(raw["select"], problems, "online.select")
    if "scorer" in raw:
        if config.every == "batch":
            problems.append("online.scorer: per-batch selection scores each row by its training loss; remove scorer")
        config.scorer = parse_scorer(raw["scorer"], "online.scorer", problems)
    return config if len(problems) == before else None


def online_problems(config: OnlineConfig, recipe: Any) -> list[str]:
    """The options' ranges, the scorer and select blocks, and what online selection needs from the sft stage."""
    problems = config.problems()
    if config.every == "batch":
        return problems + reference_problems(config, recipe) + sft_problems(recipe)
    if config.select is None:
        return problems
    if config.scorer.type not in ONLINE_SCORERS:
        problems.append(f"online.scorer.type: {config.scorer.type!r} cannot score with the model being trained; "
                        f"use one of {', '.join(ONLINE_SCORERS)}")
    elif config.scorer.model is not None:
        problems.append("online.scorer.model: the online scorer runs the model being trained; remove `model`")
    problems += config.scorer.problems("online.scorer") + config.select.options.problems("online.select")
    problems += mix_problems(config.select, "online.select", recipe)
    if config.select.options.budget is None:
        problems.append("online.select.budget: required, at least 1: the rows each epoch trains on")
    offline = recipe.select.options.budget if recipe.select else None
    budget = config.select.options.budget
    if offline is not None and budget is not None and budget > offline:
        problems.append(f"online.select.budget: {budget} is more than select.budget ({offline}), the candidates "
                        "online selection chooses from")
    columns = select_columns(recipe)
    problems += expression_problems(config.select, "online.select",
                                    None if columns is None else columns | {config.score_column})
    return problems + sft_problems(recipe)


def reference_problems(config: OnlineConfig, recipe: Any) -> list[str]:
    """`online.batch_reference` compiled, and its columns resolved when the candidates' columns are known."""
    if config.batch_reference is None:
        return []
    key = "online.batch_reference"
    try:
        expression = Expression(config.batch_reference, key)
    except RecipeError as error:
        return error.problems
    columns = select_columns(recipe)
    return [] if columns is None else [
        f"{key}: {config.batch_reference!r}: no column {name!r}{did_you_mean(name, columns)}"
        for name in sorted(expression.columns - columns)]


def sft_problems(recipe: Any) -> list[str]:
    """What online selection needs of the sft stage it runs inside."""
    if recipe.sft is None:
        return ["online: needs an sft stage: online selection re-selects the rows SFT trains on"]
    problems = []
    if recipe.sft.args.get("packing"):
        problems.append("sft.packing: online selection samples whole rows; set `packing: false`")
    if recipe.sft.args.get("train_sampling_strategy", "random") != "random":
        problems.append("sft.train_sampling_strategy: online selection owns the sampler; remove it")
    return problems


ONLINE = Section(parse=parse_online, problems=online_problems)
