"""The `score:` section: a mapping from column name to `{type: <scorer>, ...options}`, parsed by the scorers'
config classes and checked (ranges, models, a model to score with) before anything loads."""

from __future__ import annotations

from typing import Any

from deita_train.recipe.sections import Section
from deita_train.recipe.strict import build_registered
from deita_train.scoring.config import SCORER_CONFIGS, ScorerConfig
from deita_train.training.locations import model_location_problem


def parse_scorer(raw: Any, key: str, problems: list[str]) -> ScorerConfig | None:
    """One `{type: <scorer>, ...options}` entry, typed by that scorer's config."""
    return build_registered(SCORER_CONFIGS, raw, key, "type", problems)


def parse_score(raw: Any, problems: list[str]) -> dict[str, ScorerConfig] | None:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"score: expected a mapping from column name to scorer, e.g. {{quality: {{type: "
                        f"deita_quality}}}}, got {raw!r}")
        return None
    before = len(problems)
    configs = {column: parse_scorer(spec, f"score.{column}", problems) for column, spec in raw.items()}
    return configs if len(problems) == before else None


def scorer_problems(config: ScorerConfig, key: str, recipe_model: str | None) -> list[str]:
    """Ranges, and the scoring model: set, and found."""
    problems = config.problems(key)
    if not config.uses_model:
        return problems
    if config.model is None and recipe_model is None:
        problems.append(f"{key}.model: the {config.type} scorer needs a model: set `model` on the scorer or the "
                        "recipe's model.name_or_path")
    elif config.model is not None and (missing := model_location_problem(config.model, f"{key}.model")):
        problems.append(missing)
    return problems


def score_problems(scorers: dict[str, ScorerConfig], recipe: Any) -> list[str]:
    problems = [] if recipe.pool else ["pool: required by the score stage: list at least one source"]
    recipe_model = recipe.model.name_or_path if recipe.model is not None else None
    for column, config in scorers.items():
        problems += scorer_problems(config, f"score.{column}", recipe_model)
    return problems


def scored_columns(scorers: dict[str, ScorerConfig]) -> set[str]:
    """Every column the scorers add to `scored/`."""
    return {name for column, config in scorers.items() for name in config.columns(column)}


SCORE = Section(parse=parse_score, problems=score_problems)
