"""Recipe loading: YAML with `extends:`, dotted `KEY=VALUE` overrides, strict typed validation.

Nothing here loads a model or data; `load_recipe` raises one `RecipeError` listing every problem.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from deita_train.callbacks import parse_callbacks
from deita_train.recipe.errors import RecipeError
from deita_train.recipe.schema import (
    DPOStage,
    EvalData,
    HubSection,
    ModelConfig,
    PeftSection,
    Recipe,
    SFTStage,
    SourceConfig,
)
from deita_train.recipe.strict import build, build_registered, convert
from deita_train.registry import did_you_mean

SECTIONS = (
    "extends", "output_dir", "seed", "model", "pool", "score", "select", "sft", "dpo", "peft", "hub", "callbacks",
    "online",
)
# Keys of the TRL configs that the recipe sets itself.
RESERVED_TRAINER_KEYS = {"output_dir": "set from the recipe's output_dir (<output_dir>/sft or /dpo)"}
# TrainingArguments types it `str | None`, but Trainer.train takes True (the last checkpoint in output_dir).
TRAINER_KEY_TYPES = {"resume_from_checkpoint": bool | str | None}
EVAL_KEYS = ("eval_dataset", "eval_split")
DPO_OWN_KEYS = ("dataset", "model", *EVAL_KEYS)


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read, merge, override and validate the recipe at `path`."""
    data = read_with_extends(Path(path), seen=())
    for item in overrides:
        apply_override(data, item)
    return parse_recipe(data)


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
    """Mappings merge key by key; anything else in `override` replaces the base value."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


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
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise RecipeError([f"{key}: {leaf} is not an index of a list of {len(node)}"])
        node[int(leaf)] = value
    else:
        node[leaf] = value


def parse_recipe(data: dict[str, Any]) -> Recipe:
    """Validate a merged recipe mapping into a `Recipe`, collecting every problem."""
    problems: list[str] = []
    for key in data:
        if key not in SECTIONS:
            problems.append(f"{key}: unknown section{did_you_mean(key, SECTIONS[1:])}")
    if "output_dir" not in data:
        problems.append("output_dir: required key is missing")
    seed = convert(data.get("seed", 42), int, "seed", problems)
    model = build(ModelConfig, data["model"], "model", problems) if "model" in data else None
    pool = convert(data.get("pool", []), list[SourceConfig], "pool", problems)
    score = parse_score(data.get("score") or {}, problems)
    select = parse_select(data["select"], problems) if "select" in data else None
    sft = parse_sft(data["sft"] or {}, problems) if "sft" in data else None
    dpo = parse_dpo(data["dpo"] or {}, problems) if "dpo" in data else None
    callbacks = parse_callbacks(data.get("callbacks") or [], problems)
    peft = build(PeftSection, data["peft"] or {}, "peft", problems) if "peft" in data else None
    hub = build(HubSection, data["hub"] or {}, "hub", problems) if "hub" in data else None
    online = parse_online(data["online"], problems) if "online" in data else None
    recipe = Recipe(
        output_dir=Path(str(data.get("output_dir", ""))),
        seed=seed,
        model=model,
        pool=pool or [],
        score=score,
        select=select,
        sft=sft,
        dpo=dpo,
        peft=peft,
        hub=hub,
        callbacks=callbacks,
        online=online,
        raw=data,
    )
    if not problems:
        problems += check_consistency(recipe)
        problems += check_paths(recipe)
    if problems:
        raise RecipeError(problems)
    return recipe


def parse_score(data: Any, problems: list[str]) -> dict[str, Any]:
    """`score:` maps a column name to `{type: <scorer>, ...options}` typed by the scorer's config."""
    from deita_train.scoring import SCORERS

    if not isinstance(data, dict):
        problems.append(f"score: expected a mapping from column name to scorer, got {data!r}")
        return {}
    return {
        column: build_registered(SCORERS, spec, f"score.{column}", "type", problems) for column, spec in data.items()
    }


def parse_select(data: Any, problems: list[str], key: str = "select") -> Any:
    """`select:` (or `online.select:`) is `strategy`, optional `filters`, and the strategy's own options."""
    from deita_train.selection import STRATEGIES
    from deita_train.selection.base import SelectConfig

    if not isinstance(data, dict) or "strategy" not in data:
        problems.append(f"{key}: expected a mapping with `strategy` (one of {', '.join(STRATEGIES.names())})")
        return None
    try:
        strategy = STRATEGIES.get(data["strategy"], f"{key}.strategy")
    except RecipeError as error:
        problems += error.problems
        return None
    common = {"strategy", "filters"}
    filters = convert(data.get("filters", []), list[str], f"{key}.filters", problems)
    options = build(strategy.config_class, {k: v for k, v in data.items() if k not in common}, key, problems)
    return SelectConfig(strategy=data["strategy"], options=options, filters=filters or [], raw=data)


def parse_sft(data: Any, problems: list[str]) -> SFTStage | None:
    """`sft:` is TRL `SFTConfig` fields plus the stage's eval data."""
    if not isinstance(data, dict):
        problems.append(f"sft: expected a mapping of trl.SFTConfig fields, got {data!r}")
        return None
    return SFTStage(**parse_eval_data(data, "sft", problems), args=parse_trainer_args(data, "sft", EVAL_KEYS, problems))


def parse_online(data: Any, problems: list[str]) -> Any:
    """`online:` typed by `OnlineConfig`; `select` through the select parser, `scorer` through the scorer registry
    (only scorers that can run on the model being trained)."""
    from deita_train.online.config import OnlineConfig
    from deita_train.scoring import SCORERS
    from deita_train.scoring.ifd import TurnLossScorer

    before = len(problems)
    config = build(OnlineConfig, data, "online", problems)
    if config is None:
        return None
    config.select = parse_select(data["select"], problems, "online.select")
    if "scorer" in data:
        config.scorer = build_registered(SCORERS, data["scorer"], "online.scorer", "type", problems)
    online_scorers = [name for name in SCORERS.names() if issubclass(SCORERS.get(name, ""), TurnLossScorer)]
    if config.scorer is not None and config.scorer.type not in online_scorers:
        problems.append(f"online.scorer.type: {config.scorer.type!r} cannot score with the model being trained; "
                        f"use one of {', '.join(online_scorers)}")
    elif config.scorer is not None and config.scorer.model is not None:
        problems.append("online.scorer.model: the online scorer runs the model being trained; remove `model`")
    if config.select is not None and config.select.options is not None and (config.select.options.budget or 0) < 1:
        problems.append("online.select.budget: required, at least 1: the rows each epoch trains on")
    return config if len(problems) == before else None


def parse_dpo(data: Any, problems: list[str]) -> DPOStage | None:
    """`dpo:` is the preference `dataset`, an optional start `model`, the eval data and TRL `DPOConfig` fields."""
    if not isinstance(data, dict):
        problems.append(f"dpo: expected a mapping, got {data!r}")
        return None
    dataset = convert(data.get("dataset", []), list[SourceConfig], "dpo.dataset", problems)
    if not data.get("dataset"):
        problems.append("dpo.dataset: required: a list of preference sources (prompt/chosen/rejected)")
    model = convert(data.get("model"), str | None, "dpo.model", problems)
    args = parse_trainer_args(data, "dpo", DPO_OWN_KEYS, problems)
    return DPOStage(**parse_eval_data(data, "dpo", problems), dataset=dataset or [], model=model, args=args)


def parse_eval_data(data: dict[str, Any], section: str, problems: list[str]) -> dict[str, Any]:
    """`eval_dataset` (sources) and `eval_split` (a fraction in (0, 1) or a row count) of a training stage."""
    eval_dataset = convert(data.get("eval_dataset", []), list[SourceConfig], f"{section}.eval_dataset", problems)
    split = convert(data.get("eval_split"), int | float | None, f"{section}.eval_split", problems)
    if isinstance(split, float) and not 0 < split < 1 or isinstance(split, int) and split < 1:
        problems.append(f"{section}.eval_split: a fraction in (0, 1) or a row count >= 1, got {split}")
    if eval_dataset and split is not None:
        problems.append(f"{section}: set eval_dataset or eval_split, not both")
    return {"eval_dataset": eval_dataset or [], "eval_split": split}


def parse_trainer_args(data: Any, section: str, own_keys: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    """Check a `sft:`/`dpo:` block against TRL's own config fields (names and types), before anything loads."""
    import trl

    config_class = {"sft": trl.SFTConfig, "dpo": trl.DPOConfig}[section]
    if not isinstance(data, dict):
        problems.append(f"{section}: expected a mapping of trl.{config_class.__name__} fields, got {data!r}")
        return {}
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    hints = typing.get_type_hints(config_class) | TRAINER_KEY_TYPES
    args: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{section}.{name}"
        if name in own_keys:
            continue
        if name in RESERVED_TRAINER_KEYS:
            problems.append(f"{key}: {RESERVED_TRAINER_KEYS[name]}; remove it")
        elif name not in fields:
            problems.append(
                f"{key}: not a field of trl.{config_class.__name__} (trl {trl.__version__})"
                f"{did_you_mean(name, fields).split(' known:')[0]}"
            )
        else:
            args[name] = convert(value, hints[name], key, problems)
    return args


def check_consistency(recipe: Recipe) -> list[str]:
    """Contradictions between sections: a stage that needs something the recipe lacks."""
    problems = []
    if (recipe.score or recipe.select) and not recipe.pool:
        problems.append("pool: required by the score/select stages: list at least one source")
    if recipe.sft is not None and recipe.model is None:
        problems.append("model: required by the sft stage: set model.name_or_path")
    if recipe.sft is not None and not recipe.pool:
        problems.append("pool: required by the sft stage: list at least one source")
    if recipe.dpo is not None and recipe.sft is None and recipe.dpo.model is None and recipe.model is None:
        problems.append("dpo.model: the dpo stage needs a model: set dpo.model, model.name_or_path, or an sft stage")
    problems += check_online(recipe)
    if recipe.model is not None:
        from deita_train.training.chat_templates import TEMPLATE_NAMES

        if recipe.model.chat_template not in TEMPLATE_NAMES:
            hint = did_you_mean(recipe.model.chat_template, TEMPLATE_NAMES)
            problems.append(f"model.chat_template: unknown template{hint}")
    problems += training_problems(recipe)
    if recipe.hub is not None and recipe.select is None:
        problems.append("hub.dataset_id: pushes the selected dataset, but the recipe has no select stage")
    for key, source in iter_sources(recipe):
        chosen = [name for name in ("limit", "sample", "fraction") if getattr(source, name) is not None]
        if len(chosen) > 1:
            problems.append(f"{key}: set one of limit, sample, fraction, not {' and '.join(chosen)}")
        if source.fraction is not None and not 0 < source.fraction <= 1:
            problems.append(f"{key}.fraction: must be in (0, 1], got {source.fraction}")
    return problems


def training_problems(recipe: Recipe) -> list[str]:
    """Training features whose preconditions the recipe does not meet (packing, Liger, evaluation)."""
    from deita_train.training.preconditions import eval_problems, liger_problems, packing_problems

    attn = recipe.model.attn_implementation if recipe.model else None
    problems = []
    for section, stage in (("sft", recipe.sft), ("dpo", recipe.dpo)):
        if stage is None:
            continue
        problems += packing_problems(section, stage.args, attn)
        problems += liger_problems(section, stage.args)
        problems += eval_problems(section, stage.args, stage.has_eval_data)
    return problems


def check_online(recipe: Recipe) -> list[str]:
    """What online selection needs from the other sections: an sft stage that samples rows one by one."""
    if recipe.online is None:
        return []
    if recipe.sft is None:
        return ["online: needs an sft stage: online selection re-selects the rows SFT trains on"]
    problems = []
    if recipe.sft.args.get("packing"):
        problems.append("sft.packing: online selection samples whole rows; set `packing: false`")
    if recipe.sft.args.get("train_sampling_strategy", "random") != "random":
        problems.append("sft.train_sampling_strategy: online selection owns the sampler; remove it")
    budget, offline = recipe.online.select.options.budget, recipe.select.options.budget if recipe.select else None
    if offline is not None and budget > offline:
        problems.append(f"online.select.budget: {budget} is more than select.budget ({offline}), the candidates "
                        "online selection chooses from")
    return problems


def check_paths(recipe: Recipe) -> list[str]:
    """Missing local files and models, named by key (hub ids are checked only when offline)."""
    from deita_train.data.sources import locate_problem
    from deita_train.training.models import model_location_problem

    problems = [p for key, s in iter_sources(recipe) if (p := locate_problem(s.path, f"{key}.path"))]
    models = [("model.name_or_path", recipe.model.name_or_path)] if recipe.model else []
    if recipe.dpo is not None and recipe.dpo.model is not None:
        models.append(("dpo.model", recipe.dpo.model))
    for column, config in recipe.score.items():
        if getattr(config, "model", None):
            models.append((f"score.{column}.model", config.model))
    problems += [p for key, name in models if (p := model_location_problem(name, key))]
    return problems


def iter_sources(recipe: Recipe):
    """(key, source) for every data source the recipe reads."""
    yield from ((f"pool.{i}", s) for i, s in enumerate(recipe.pool))
    if recipe.dpo is not None:
        yield from ((f"dpo.dataset.{i}", s) for i, s in enumerate(recipe.dpo.dataset))
    for section, stage in (("sft", recipe.sft), ("dpo", recipe.dpo)):
        if isinstance(stage, EvalData):
            yield from ((f"{section}.eval_dataset.{i}", s) for i, s in enumerate(stage.eval_dataset))
