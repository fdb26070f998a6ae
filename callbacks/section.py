"""The `callbacks:` section: a list of `{name: <registered callback>, ...options}`, typed by each callback's config."""

from __future__ import annotations

from typing import Any

from deita_train.callbacks.base import CallbackConfig, parse_callbacks

from deita_train.recipe.sections import Section


def parse(raw: Any, problems: list[str]) -> list[CallbackConfig]:
    return parse_callbacks(raw or [], problems)


def callback_problems(configs: list[CallbackConfig], recipe: Any) -> list[str]:
    if configs and recipe.sft is None and recipe.dpo is None:
        return ["callbacks: run inside the trainers, but the recipe has no sft or dpo stage"]
    return []


CALLBACKS = Section(parse=parse, problems=callback_problems)
