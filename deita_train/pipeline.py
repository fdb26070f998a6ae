"""The run, top to bottom: pool -> score -> select -> sft -> dpo. Each stage also runs on its own,
reading what the stage before it wrote under `output_dir`.
"""

from __future__ import annotations

import logging
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from deita_train.data.sources import load_sources
from deita_train.processes import on_main_process, process_state
from deita_train.recipe.schema import ModelConfig, Recipe
from deita_train.scoring.base import ScoringContext
from deita_train.storage import write_json, write_text

logger = logging.getLogger(__name__)


class Run:
    """One recipe's outputs under `recipe.output_dir`, and the report gathered while producing them."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.out = recipe.output_dir
        self.report: dict[str, Any] = {}

    @cached_property
    def pool(self) -> Dataset:
        """The pool as loaded from its sources: read once per run, however many stages use it."""
        pool, data_report = load_sources(self.recipe.pool, self.recipe.seed)
        self.report["pool"] = {"rows": len(pool), **data_report.to_dict()}
        return pool

    def score(self) -> Dataset:
        from deita_train.scoring.engine import score_pool

        model = self.recipe.model
        context = ScoringContext(
            model_name_or_path=model.name_or_path if model else None,
            trust_remote_code=model.trust_remote_code if model else False,
            seed=self.recipe.seed,
        )
        scored, stats = score_pool(self.pool, self.recipe.score, context, self.out / "scored")
        self.report["score"] = stats
        logger.info("scored %d rows -> %s", len(scored), self.out / "scored")
        return scored

    def scored(self) -> Dataset:
        """What selection starts from: `scored/` when the recipe scores, else the pool as loaded."""
        if not self.recipe.score:
            return self.pool
        if not (self.out / "scored").is_dir():
            raise FileNotFoundError(f"{self.out / 'scored'} does not exist: run `deita-train score` first")
        return load_from_disk(str(self.out / "scored"))

    def select(self, scored: Dataset) -> Dataset:
        from deita_train.selection.publish import dataset_card, push_selected
        from deita_train.selection.runner import select

        selected, summary = select(scored, self.recipe.select, self.recipe.seed, self.out)
        self.report["select"] = summary
        card = dataset_card(self.recipe, summary)
        write_text(self.out / "report" / "dataset_card.md", str(card))
        if self.recipe.hub is not None:
            push_selected(selected, card, self.recipe.hub)
            logger.info("pushed the selected rows to the hub dataset %s", self.recipe.hub.dataset_id)
        logger.info("selected %d of %d rows -> %s", len(selected), len(scored), self.out / "selected")
        return selected

    def selected(self) -> Dataset:
        """What SFT trains on: `selected/` when the recipe selects, else what selection would start from (`scored/`
        when the recipe scores, so online selection can read those columns; else the pool)."""
        if self.recipe.select is None:
            return self.scored()
        if not (self.out / "selected").is_dir():
            raise FileNotFoundError(f"{self.out / 'selected'} does not exist: run `deita-train select` first")
        return load_from_disk(str(self.out / "selected"))

    def sft(self, conversations: Dataset) -> None:
        from deita_train.callbacks import CallbackContext, instantiate_callbacks
        from deita_train.training.eval_data import hold_out
        from deita_train.training.sft import train_sft

        conversations, evaluation, eval_report = hold_out(conversations, self.recipe.sft, "sft", self.recipe.seed)
        context = CallbackContext(
            output_dir=self.out,
            pool=self.scored() if self.recipe.pool else None,
            selected=conversations if self.recipe.select is not None else None,
            train_dataset=conversations,
            selection_path=self.out / "selection.json" if self.recipe.select is not None else None,
        )
        callbacks = instantiate_callbacks(self.recipe.callbacks, context)
        online = {}
        if self.recipe.online is not None:  # train on the candidates, re-selected by rounds under online/
            from deita_train.online.trainer import OnlineSFTTrainer

            online["trainer_class"] = partial(OnlineSFTTrainer, online=self.recipe.online, candidates=conversations,
                                              online_dir=self.out / "online")
        trainer = train_sft(
            conversations, self.recipe.model, self.recipe.sft, self.out / "sft", self.recipe.seed, callbacks,
            self.recipe.peft, evaluation, **online,
        )
        self.report["sft"] = {"rows": len(conversations), "global_step": trainer.state.global_step, **eval_report}

    def dpo(self) -> None:
        from deita_train.training.dpo import train_dpo
        from deita_train.training.eval_data import hold_out

        stage = self.recipe.dpo
        if stage.model is not None:
            start_from = stage.model
        elif self.recipe.sft is not None:
            start_from = str(self.out / "sft")
        else:
            start_from = self.recipe.model.name_or_path
        model_config = self.recipe.model or ModelConfig(name_or_path=start_from)
        preferences, data_report = load_sources(stage.dataset, self.recipe.seed, preference=True)
        self.report["dpo_data"] = {"rows": len(preferences), **data_report.to_dict()}
        preferences, evaluation, eval_report = hold_out(preferences, stage, "dpo", self.recipe.seed, preference=True)
        trainer = train_dpo(
            preferences, model_config, stage, start_from, self.out / "dpo", self.recipe.seed, peft=self.recipe.peft,
            eval_dataset=evaluation,
        )
        self.report["dpo"] = {"start_from": start_from, "global_step": trainer.state.global_step, **eval_report}

    def write_report(self) -> Path:
        path = self.out / "report" / "run.json"
        write_json(path, self.report)
        return path


def run(recipe: Recipe, stages: list[str] | None = None) -> Run:
    """Run `stages` (default: every stage the recipe declares), in order.

    Under `accelerate launch` every process runs this: scoring is sharded by the engine, selection runs
    once on the main process and the others read its `selected/`, and the trainers distribute themselves.
    """
    state = process_state()
    stages = recipe.stages if stages is None else [s for s in recipe.stages if s in stages]
    job = Run(recipe)
    scored = job.score() if "score" in stages else None
    if "select" in stages:
        pool = scored if scored is not None else job.scored()

        def select() -> None:  # the others read `selected/` once it is written
            job.select(pool)

        on_main_process(select, "selection")
    if "sft" in stages:
        job.sft(job.selected())
    if "dpo" in stages:
        job.dpo()
    if state.is_main_process:
        job.write_report()
    return job
