"""The run, top to bottom: synth -> pool -> score -> select -> sft -> dpo. Each stage also runs on its own, reading
what the stage before it wrote under `output_dir`, once that output's manifest says this recipe made it (manifest.py): a
stage whose manifest matches is skipped ("up to date"), `force` re-runs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from deita_train.data.sources import load_sources
from deita_train.manifest import StagePlan
from deita_train.plans import stage_plans
from deita_train.processes import on_main_process, process_state
from deita_train.recipe.schema import Recipe
from deita_train.report.command import render_report
from deita_train.report.record import run_record, versions
from deita_train.scoring.base import ScoringContext
from deita_train.storage import load_dataset_dir, write_json, write_text
from deita_train.synth.config import made_by_synth
from deita_train.training.config import ModelConfig

logger = logging.getLogger(__name__)


class Run:
    """One recipe's outputs under `recipe.output_dir`, and the report gathered while producing them.

    Args:
        invocation: how the user named the recipe and its overrides, for the commands that error messages suggest.
    """

    def __init__(self, recipe: Recipe, invocation: str = "RECIPE") -> None:
        self.recipe = recipe
        self.out = recipe.output_dir
        self.plans: dict[str, StagePlan] = stage_plans(recipe)
        self.invocation = invocation
        self.report: dict[str, Any] = {"stages": {}}

    @cached_property
    def pool(self) -> Dataset:
        """The pool as loaded from its sources: read once per run, however many stages use it."""
        self.require_synthesized(self.recipe.pool)
        pool, data_report = load_sources(self.recipe.pool, self.recipe.seed)
        self.report["pool"] = {"rows": len(pool), **data_report.to_dict()}
        return pool

    def synth(self) -> None:
        from deita_train.synth.runner import synthesize

        self.report["synth"] = synthesize(self.recipe.synth, self.recipe.seed, self.out)
        logger.info("synthesized %d rows -> %s", self.report["synth"]["rows"], self.out / "synth")

    def require_synthesized(self, sources: list[Any]) -> None:
        """Refuse sources inside `synth/` unless this recipe's synth stage made what is there."""
        if any(made_by_synth(source.path, self.recipe) for source in sources):
            self.plans["synth"].require(self.invocation)

    def score(self) -> None:
        from deita_train.scoring.engine import score_pool

        model = self.recipe.model
        context = ScoringContext(model_name_or_path=model.name_or_path if model else None, seed=self.recipe.seed)
        scored, stats = score_pool(self.pool, self.recipe.score, context, self.out / "scored")
        self.report["score"] = stats
        logger.info("scored %d rows -> %s", len(scored), self.out / "scored")

    def output(self, stage: str, in_memory: bool = False) -> Dataset:
        """`stage`'s output, once its manifest says this recipe made it."""
        plan = self.plans[stage]
        plan.require(self.invocation)
        return load_dataset_dir(plan.output) if in_memory else load_from_disk(str(plan.output))

    def scored(self) -> Dataset:
        """What selection starts from: `scored/` when the recipe scores, else the pool as loaded."""
        return self.output("score") if self.recipe.score else self.pool

    def select(self) -> None:
        from deita_train.selection.publish import dataset_card, push_selected
        from deita_train.selection.runner import select

        scored = self.scored()
        selected, summary = select(scored, self.recipe.select, self.recipe.seed, self.out, self.skipped_records())
        self.report["select"] = summary
        card = dataset_card(self.recipe, summary)
        write_text(self.out / "report" / "dataset_card.md", str(card))
        if self.recipe.hub is not None:
            push_selected(selected, card, self.recipe.hub)
            logger.info("pushed the selected rows to the hub dataset %s", self.recipe.hub.dataset_id)
        logger.info("selected %d of %d rows -> %s", len(selected), len(scored), self.out / "selected")

    def skipped_records(self) -> list[dict[str, Any]]:
        """The pool's records skipped at load (`on_error: skip`), `{path, where, problem}`: from this command's
        load, else from the run record an earlier command wrote."""
        pool = self.report.get("pool")
        if pool is None:
            path = self.out / "report" / "run.json"
            pool = (json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}).get("pool", {})
        return [{"path": source["path"], **item} for source in pool.get("sources", []) for item in source["skipped"]]

    def selected(self) -> Dataset:
        """What SFT trains on: `selected/` when the recipe selects, else what selection would start from (`scored/`
        when the recipe scores, so online selection can read those columns; else the pool), loaded into memory so
        that TRL's tokenized copies never land as cache files in those folders."""
        if self.recipe.select is not None:
            return self.output("select", in_memory=True)
        return self.output("score", in_memory=True) if self.recipe.score else self.pool

    def sft(self) -> None:
        from deita_train.callbacks import CallbackContext, instantiate_callbacks
        from deita_train.training.eval_data import hold_out
        from deita_train.training.sft import train_sft

        conversations = self.selected()
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
        if self.recipe.online is not None and self.recipe.online.every == "batch":  # the top 1/k of each draw
            from deita_train.online.batch_selection import REFERENCE, BatchSelectingSFTTrainer, with_reference

            if self.recipe.online.batch_reference is not None:
                conversations = with_reference(conversations, self.recipe.online.batch_reference)
                online["carried"] = (REFERENCE,)
            online["trainer_class"] = partial(BatchSelectingSFTTrainer, online=self.recipe.online)
        elif self.recipe.online is not None:  # train on the candidates, re-selected by rounds under online/
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

        stage, recipe = self.recipe.dpo, self.recipe
        if stage.model is not None:  # its own model, with its own trust_remote_code
            start_from = stage.model
            model_config = dataclasses.replace(recipe.model or ModelConfig(name_or_path=stage.model),
                                               name_or_path=stage.model, trust_remote_code=stage.trust_remote_code)
        elif recipe.sft is not None:
            self.plans["sft"].require(self.invocation)
            start_from, model_config = str(self.out / "sft"), recipe.model
        else:
            start_from, model_config = recipe.model.name_or_path, recipe.model
        self.require_synthesized(stage.dataset)
        preferences, data_report = load_sources(stage.dataset, recipe.seed, preference=True)
        self.report["dpo_data"] = {"rows": len(preferences), **data_report.to_dict()}
        preferences, evaluation, eval_report = hold_out(preferences, stage, "dpo", recipe.seed, preference=True)
        trainer = train_dpo(
            preferences, model_config, stage, start_from, self.out / "dpo", recipe.seed, peft=recipe.peft,
            eval_dataset=evaluation,
        )
        self.report["dpo"] = {"start_from": start_from, "global_step": trainer.state.global_step, **eval_report}

    def write_record(self) -> Path:
        """`report/run.json`: this command's entries merged over those of earlier commands (a `select` run alone
        keeps what `score` recorded), with the run record (report/record.py) of this command."""
        path = self.out / "report" / "run.json"
        earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        stages = earlier.get("stages", {}) | self.report["stages"]
        record = run_record(self.recipe, process_state().num_processes, self.out)
        write_json(path, earlier | self.report | record | {"stages": stages})
        return path


def run(recipe: Recipe, stages: list[str] | None = None, *, force: bool = False, invocation: str = "RECIPE") -> Run:
    """Run `stages` (default: every stage the recipe declares), in order; skip those already up to date unless
    `force`.

    Under `accelerate launch` every process runs this: scoring is sharded by the engine, selection runs
    once on the main process and the others read its `selected/`, and the trainers distribute themselves.
    """
    state = process_state()
    job = Run(recipe, invocation)
    for stage in recipe.stages if stages is None else [s for s in recipe.stages if s in stages]:
        plan = job.plans[stage]
        if not force and plan.up_to_date():
            logger.info("%s: up to date, skipped (%s was made by this configuration; --force re-runs it)",
                        stage, plan.output)
            job.report["stages"][stage] = {"status": "up to date", "fingerprint": plan.fingerprint}
            continue
        if state.is_main_process:
            plan.start()
        state.wait_for_everyone()
        started = time.perf_counter()
        if stage == "select":
            on_main_process(job.select, "selection")  # the others read `selected/` once it is written
        else:
            getattr(job, stage)()
        if state.is_main_process:
            plan.finish(versions())
        state.wait_for_everyone()
        job.report["stages"][stage] = {"status": "ran", "fingerprint": plan.fingerprint,
                                       "seconds": round(time.perf_counter() - started, 3)}
    if state.is_main_process:
        job.write_record()
        logger.info("report: %s", render_report(job.out))
    state.wait_for_everyone()  # no process tears its process group down while another still uses it
    return job
