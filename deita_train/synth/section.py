"""The `synth:` section: typed by `SynthConfig`, its ranges checked, and its filters compiled with their columns
resolved against the columns the synth stage writes."""

from __future__ import annotations

from typing import Any

from deita_train.recipe.errors import RecipeError
from deita_train.recipe.sections import Section
from deita_train.recipe.strict import build
from deita_train.registry import did_you_mean
from deita_train.scoring.config import RewardScorerConfig
from deita_train.selection.expressions import Expression
from deita_train.synth.config import SynthConfig
from deita_train.training.locations import model_location_problem


def parse_synth(raw: Any, problems: list[str]) -> SynthConfig | None:
    return build(SynthConfig, raw, "synth", problems)


def reward_problems(options: dict[str, Any] | None, key: str) -> list[str]:
    """The options of a `reward` scorer, checked as `score:` checks them (known keys, types, ranges)."""
    if options is None:
        return []
    problems: list[str] = []
    config = build(RewardScorerConfig, {"type": "reward", **options}, key, problems)
    return problems + (config.problems(key) if config is not None else [])


def synth_problems(config: SynthConfig, recipe: Any) -> list[str]:
    problems = config.problems()
    problems += reward_problems(config.tags.reward if config.tags else None, "synth.tags.reward")
    problems += reward_problems(config.pairs.reward if config.pairs else None, "synth.pairs.reward")
    problems += [missing for key, name in config.models().items() if (missing := model_location_problem(name, key))]
    columns = config.columns()
    for i, text in enumerate(config.filters):
        key = f"synth.filters.{i}"
        try:
            expression = Expression(text, key)
        except RecipeError as error:
            problems += error.problems
            continue
        problems += [f"{key}: {text!r}: no column {name!r}{did_you_mean(name, columns)} (the columns synth writes "
                     "with its tags, repetition and pairs)" for name in sorted(expression.columns - columns)]
    return problems


SYNTH = Section(parse=parse_synth, problems=synth_problems)
