"""The plan of every stage a recipe declares: which sections each reads and what its inputs are (see manifest.py).

The chain follows the data: pool -> score -> select -> sft -> dpo. A stage's input fingerprint is the plan of the
stage before it (computed from the recipe, not read from disk), so equal fingerprints mean the same configuration
all the way up.
"""

from __future__ import annotations

from typing import Any

from deita_train.data.pool_cache import source_fingerprint
from deita_train.fingerprints import digest, model_identity, source_identity
from deita_train.manifest import StagePlan
from deita_train.recipe.schema import Recipe
from deita_train.selection.eval_prompts import is_prompt_file
from deita_train.synth.config import made_by_synth


def sources_fingerprint(sources: list[Any], seed: int, preference: bool = False, recipe: Recipe | None = None,
                        synthesized: str | None = None) -> str:
    """What the sources' rows depend on: each source's pool-cache fingerprint (file identity, options, the seed
    when it draws rows), in order; a source the synth stage writes is identified by that stage's plan,
    `synthesized` (it may not exist yet)."""
    return digest([synthesized if synthesized and made_by_synth(source.path, recipe)
                   else source_fingerprint(source, seed, preference) for source in sources])


def synth_plan(recipe: Recipe) -> StagePlan:
    """The synth stage reads its section, the seed, and the models it runs."""
    models = {key: model_identity(name) for key, name in recipe.synth.models().items()}
    return StagePlan("synth", recipe.output_dir, section_digests(recipe, "synth"), {"models": digest(models)})


def stage_plans(recipe: Recipe) -> dict[str, StagePlan]:
    """A plan for every stage the recipe declares."""
    out, seed, plans = recipe.output_dir, recipe.seed, {}
    synthesized = None
    if recipe.synth is not None:
        plans["synth"] = synth_plan(recipe)
        synthesized = plans["synth"].fingerprint
    data = sources_fingerprint(recipe.pool, seed, recipe=recipe, synthesized=synthesized) if recipe.pool else None
    model = recipe.model.name_or_path if recipe.model is not None else None
    if recipe.score:
        models = {column: model_identity(config.model or model) for column, config in recipe.score.items()
                  if config.uses_model}
        plans["score"] = StagePlan("score", out, {"score": digest(recipe.score)},
                                   {"pool": data, "models": digest(models)})
        data = plans["score"].fingerprint
    if recipe.select is not None:
        plans["select"] = StagePlan("select", out, section_digests(recipe, "select"),
                                    {"candidates": data, **eval_prompts(recipe.select)})
        data = plans["select"].fingerprint
    if recipe.sft is not None:
        plans["sft"] = StagePlan("sft", out, section_digests(recipe, "model", "sft", "peft", "online"),
                                 {"train": data, "model": digest(model_identity(model)),
                                  "eval": sources_fingerprint(recipe.sft.eval_dataset, seed)})
    if recipe.dpo is not None:
        start = (plans["sft"].fingerprint if recipe.sft is not None and recipe.dpo.model is None
                 else digest(model_identity(recipe.dpo.model or model)))
        preferences = sources_fingerprint(recipe.dpo.dataset + recipe.dpo.eval_dataset, seed, preference=True,
                                          recipe=recipe, synthesized=synthesized)
        plans["dpo"] = StagePlan("dpo", out, section_digests(recipe, "model", "dpo", "peft"),
                                 {"start": start, "preferences": preferences})
    return plans


def eval_prompts(select: Any) -> dict[str, str]:
    """The identity of the prompt files decontamination reads (an edit to one re-runs the selection); none when
    `select.decontaminate` is not set."""
    if select.decontaminate is None:
        return {}
    sets = [source_identity(entry, "", None) if is_prompt_file(entry) else entry for entry in select.decontaminate.sets]
    return {"eval_prompts": digest(sets)}


def section_digests(recipe: Recipe, *names: str) -> dict[str, str]:
    """A digest per named section the recipe has (every field, defaults included), and the seed."""
    return {name: digest(getattr(recipe, name)) for name in names if getattr(recipe, name) is not None} | {
        "seed": str(recipe.seed)}
