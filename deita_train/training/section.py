"""The `model:`, `sft:`, `dpo:` and `peft:` sections: parsed (the trainer blocks against TRL's own config fields
and types) and checked (what each stage needs from the others, training preconditions, files and models)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from deita_train.data.section import parse_sources, sources_problems
from deita_train.recipe.errors import RecipeError
from deita_train.recipe.sections import Section
from deita_train.recipe.strict import build, convert
from deita_train.registry import did_you_mean
from deita_train.selection.expressions import Expression
from deita_train.selection.section import select_columns
from deita_train.training.config import DPOStage, ModelConfig, PeftSection, SFTStage
from deita_train.training.locations import model_location_problem
from deita_train.training.preconditions import (
    eval_problems,
    liger_problems,
    packing_problems,
    sample_weight_problems,
)

# Keys of the TRL configs that the recipe sets itself.
RESERVED_TRAINER_KEYS = {"output_dir": "set from the recipe's output_dir (<output_dir>/sft or /dpo)"}
# TrainingArguments types it `str | None`, but Trainer.train takes True (the last checkpoint in output_dir).
TRAINER_KEY_TYPES = {"resume_from_checkpoint": bool | str | None}
EVAL_KEYS = ("eval_dataset", "eval_split")
SFT_OWN_KEYS = (*EVAL_KEYS, "sample_weight")
DPO_OWN_KEYS = ("dataset", "model", "trust_remote_code", "sample_weight", *EVAL_KEYS)
# The columns of a loaded preference row (data/canonical.py, data/combine.py): its other fields are not kept.
PREFERENCE_COLUMNS = {"id", "prompt", "chosen", "rejected", "source_file", "source_row"}


def parse_model(raw: Any, problems: list[str]) -> ModelConfig | None:
    return build(ModelConfig, raw, "model", problems)


def model_problems(config: ModelConfig, recipe: Any) -> list[str]:
    from deita_train.data.chat_templates import TEMPLATE_NAMES

    problems = []
    if config.chat_template not in TEMPLATE_NAMES:
        problems.append(f"model.chat_template: unknown template{did_you_mean(config.chat_template, TEMPLATE_NAMES)}")
    if missing := model_location_problem(config.name_or_path, "model.name_or_path"):
        problems.append(missing)
    return problems


def parse_sft(raw: Any, problems: list[str]) -> SFTStage | None:
    """`sft:` is TRL `SFTConfig` fields plus the stage's eval data and `sample_weight`."""
    raw = raw or {}
    if not isinstance(raw, dict):
        problems.append(f"sft: expected a mapping of trl.SFTConfig fields, got {raw!r}")
        return None
    weight = convert(raw.get("sample_weight"), str | None, "sft.sample_weight", problems)
    args = parse_trainer_args(raw, "sft", SFT_OWN_KEYS, problems)
    return SFTStage(**parse_eval_data(raw, "sft", problems), args=args, sample_weight=weight)


def parse_dpo(raw: Any, problems: list[str]) -> DPOStage | None:
    """`dpo:` is the preference `dataset`, an optional start `model`, the eval data, `sample_weight` and TRL
    `DPOConfig` fields."""
    raw = raw or {}
    if not isinstance(raw, dict):
        problems.append(f"dpo: expected a mapping, got {raw!r}")
        return None
    if not raw.get("dataset"):
        problems.append("dpo.dataset: required: a list of preference sources (prompt/chosen/rejected)")
    dataset = parse_sources("dpo.dataset")(raw.get("dataset", []), problems)
    model = convert(raw.get("model"), str | None, "dpo.model", problems)
    trust = convert(raw.get("trust_remote_code", False), bool, "dpo.trust_remote_code", problems)
    weight = convert(raw.get("sample_weight"), str | None, "dpo.sample_weight", problems)
    args = parse_trainer_args(raw, "dpo", DPO_OWN_KEYS, problems)
    return DPOStage(**parse_eval_data(raw, "dpo", problems), dataset=dataset or [], model=model,
                    trust_remote_code=bool(trust), args=args, sample_weight=weight)


def parse_eval_data(raw: dict[str, Any], section: str, problems: list[str]) -> dict[str, Any]:
    """`eval_dataset` (sources) and `eval_split` (a fraction in (0, 1) or a row count) of a training stage."""
    eval_dataset = parse_sources(f"{section}.eval_dataset")(raw.get("eval_dataset", []), problems)
    split = convert(raw.get("eval_split"), int | float | None, f"{section}.eval_split", problems)
    if isinstance(split, float) and not 0 < split < 1 or isinstance(split, int) and split < 1:
        problems.append(f"{section}.eval_split: a fraction in (0, 1) or a row count >= 1, got {split}")
    if eval_dataset and split is not None:
        problems.append(f"{section}: set eval_dataset or eval_split, not both")
    return {"eval_dataset": eval_dataset or [], "eval_split": split}


def parse_trainer_args(raw: dict[str, Any], section: str, own_keys: tuple[str, ...],
                       problems: list[str]) -> dict[str, Any]:
    """Check a `sft:`/`dpo:` block against TRL's own config fields (names and types), before anything loads."""
    import trl

    config_class = {"sft": trl.SFTConfig, "dpo": trl.DPOConfig}[section]
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    hints = typing.get_type_hints(config_class) | TRAINER_KEY_TYPES
    args: dict[str, Any] = {}
    for name, value in raw.items():
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


def stage_problems(section: str, stage: SFTStage | DPOStage, recipe: Any) -> list[str]:
    """Training preconditions (packing, Liger, evaluation) and the stage's eval sources."""
    attn = recipe.model.attn_implementation if recipe.model else None
    return (packing_problems(section, stage.args, attn) + liger_problems(section, stage.args)
            + eval_problems(section, stage.args, stage.has_eval_data)
            + sources_problems(stage.eval_dataset, f"{section}.eval_dataset"))


def weight_problems(section: str, stage: SFTStage | DPOStage, recipe: Any) -> list[str]:
    """`<section>.sample_weight`: what it cannot weight, the expression compiled, and (when the train rows' columns
    are known) every name it reads resolved."""
    if stage.sample_weight is None:
        return []
    key = f"{section}.sample_weight"
    problems = sample_weight_problems(section, stage.args)
    try:
        expression = Expression(stage.sample_weight, key)
    except RecipeError as error:
        return problems + error.problems
    if section == "dpo":
        columns, where = PREFERENCE_COLUMNS, "the columns a loaded preference row keeps"
    else:
        columns = select_columns(recipe)
        where = "the train rows' columns: the pool's fields, read from its first records, and the scorers' columns"
    missing = sorted(expression.columns - columns) if columns is not None else []
    return problems + [f"{key}: {stage.sample_weight!r}: no column {name!r}{did_you_mean(name, columns)} ({where})"
                       for name in missing]


def sft_problems(stage: SFTStage, recipe: Any) -> list[str]:
    problems = [] if recipe.model is not None else ["model: required by the sft stage: set model.name_or_path"]
    problems += [] if recipe.pool else ["pool: required by the sft stage: list at least one source"]
    return problems + stage_problems("sft", stage, recipe) + weight_problems("sft", stage, recipe)


def dpo_problems(stage: DPOStage, recipe: Any) -> list[str]:
    problems = []
    if stage.model is not None:
        problems += [missing] if (missing := model_location_problem(stage.model, "dpo.model")) else []
    elif recipe.sft is None and recipe.model is None:
        problems.append("dpo.model: the dpo stage needs a model: set dpo.model, model.name_or_path, or an sft stage")
    if stage.trust_remote_code and stage.model is None:
        problems.append("dpo.trust_remote_code: applies to dpo.model only (the sft output and model.name_or_path "
                        "follow model.trust_remote_code); set dpo.model or remove it")
    problems += weight_problems("dpo", stage, recipe)
    return problems + sources_problems(stage.dataset, "dpo.dataset", recipe) + stage_problems("dpo", stage, recipe)


def parse_peft(raw: Any, problems: list[str]) -> PeftSection | None:
    return build(PeftSection, raw or {}, "peft", problems)


def peft_problems(config: PeftSection, recipe: Any) -> list[str]:
    problems = [] if config.r >= 1 else [f"peft.r: must be at least 1, got {config.r}"]
    if not 0 <= config.lora_dropout < 1:
        problems.append(f"peft.lora_dropout: must be in [0, 1), got {config.lora_dropout}")
    if recipe.sft is None and recipe.dpo is None:
        problems.append("peft: trains adapters in the sft and dpo stages, but the recipe has neither")
    return problems


MODEL = Section(parse=parse_model, problems=model_problems)
SFT = Section(parse=parse_sft, problems=sft_problems)
DPO = Section(parse=parse_dpo, problems=dpo_problems)
PEFT = Section(parse=parse_peft, problems=peft_problems)
