"""When online rounds fire, and what a round leaves behind (docs/methods.md, online selection).

Timing, read from transformers' `Trainer._inner_training_loop`: `on_epoch_begin` runs before the epoch's
`iter(train_dataloader)`, so a round fired there (round 0, and every round with `every: epoch`) decides the
whole epoch. `on_step_end` runs after the optimizer step, when the loader has already drawn the next batch
(Accelerate's `DataLoaderShard` reads one ahead; `Trainer.get_batch_samples` takes a step's batches at
once): a round fired there takes effect at the largest number of samples any process has drawn, so the
batches already drawn are trained as drawn and every process switches at the same sample.

A round: all processes score their share of the slice, the main process selects, writes
`online/round_<k>/` and broadcasts the choice; every process adds it to its sampler, and the main process
checks that the planned sequences of all processes hash the same before it writes `round.json`.

Resume: when training starts from a checkpoint (global step G > 0), the rounds fired at steps <= G are read
back (the main process reads, all receive) into the sampler, later or unfinished ones are removed, and
rounds continue from the next index; the checkpoint's step count and the fixed steps per epoch put the
Trainer at the same sample of the same epoch, and the sampler rebuilds that epoch's order.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from deita_train.online.config import OnlineConfig
from deita_train.online.rescoring import ScoreTable, round_shares, score_share, select_round, slice_positions
from deita_train.online.rounds import drop_rounds_after, finished_rounds, read_scores, read_selected, write_round
from deita_train.online.sampler import OnlineSampler, Round
from deita_train.processes import on_main_process


class OnlineTrainer(Protocol):
    """What the callback needs of the trainer it steers (`OnlineSFTTrainer` is one): the callback depends on this,
    the trainer on the callback, never the other way round."""

    args: TrainingArguments
    online_sampler: OnlineSampler

    @property
    def zero3(self) -> bool: ...

    def log_online(self, logs: dict[str, float]) -> None: ...


class OnlineSelectionCallback(TrainerCallback):
    """Fires rounds on `trainer.online_sampler`: round 0 before the first step, then per epoch or `every_steps`."""

    def __init__(self, trainer: OnlineTrainer, config: OnlineConfig, candidates: Dataset, root: Path,
                 untrainable: int = 0) -> None:
        self.trainer = trainer
        self.untrainable = untrainable  # candidates the trainer dropped, counted in round.json
        self.config = config
        self.candidates = candidates
        self.root = root
        self.ids: list[int] = list(candidates["id"])
        self.position = {row_id: i for i, row_id in enumerate(self.ids)}
        self.table = ScoreTable.empty(len(candidates))  # kept up to date on the main process only
        self.last: int | None = None  # index of the last round in effect
        self.previous: list[int] | None = None  # its selected positions
        self.shares = None if config.select.mix is None else dict(config.select.mix.shares)  # the last round's
        self.steps_per_epoch = 1

    @property
    def sampler(self) -> OnlineSampler:
        return self.trainer.online_sampler

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # The Trainer's own count: a step per `gradient_accumulation_steps` batches, the last one possibly short.
        self.steps_per_epoch = max(math.ceil(len(kwargs["train_dataloader"]) / args.gradient_accumulation_steps), 1)
        on_main_process(lambda: drop_rounds_after(self.root, state.global_step if state.global_step > 0 else -1),
                        "online selection: removing rounds after the checkpoint")
        if state.global_step > 0:
            self.resume()

    def resume(self) -> None:
        """Put every finished round back into the sampler (read on the main process, broadcast)."""
        rounds = on_main_process(lambda: [
            Round(done["round"], done["epoch"], done["offset"],
                  [self.position[row_id] for row_id in read_selected(self.root, done["round"])])
            for done in finished_rounds(self.root)
        ], "online selection: reading the finished rounds")
        for done in rounds:
            self.sampler.add(done)
        if rounds:
            self.last, self.previous = rounds[-1].index, rounds[-1].positions
            if PartialState().is_main_process:
                self.table = ScoreTable.from_dataset(read_scores(self.root, self.last), self.config.score_column)
                self.shares = finished_rounds(self.root)[-1].get("mix", self.shares)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        epoch = state.global_step // self.steps_per_epoch
        due = epoch if self.config.every == "epoch" else state.global_step // self.config.every_steps
        if self.last is None or (self.config.every == "epoch" and due > self.last):
            self.fire(due, epoch, 0, state, kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        step = state.global_step
        if self.config.every == "steps" and step % self.config.every_steps == 0 and step < state.max_steps:
            self.fire(step // self.config.every_steps, self.sampler.epoch, None, state, kwargs)

    def fire(self, index: int, epoch: int, offset: int | None, state: TrainerState, hooks: dict[str, Any]) -> None:
        """Run round `index`, in effect from sample `offset` of `epoch` (None: the first sample not yet drawn)."""
        started = time.perf_counter()
        process = PartialState()
        chosen = slice_positions(len(self.candidates), self.config.pool_fraction, self.trainer.args.seed, index)
        share = chosen[process.process_index :: process.num_processes].tolist()
        scores = score_share(self.config, hooks["model"], hooks["processing_class"],
                             self.candidates.select(share).to_list(), self.trainer.zero3)
        scoring = time.perf_counter() - started
        parts = gather_object([(self.sampler.drawn, share, scores)])
        picks, (epoch, offset), summary = on_main_process(
            lambda: self.select(index, epoch, offset, parts, state, scoring), f"online round {index}: selection")
        self.sampler.add(Round(index, epoch, offset, picks))
        digests = gather_object([self.sampler.digest(epoch)])
        on_main_process(lambda: self.record(index, picks, summary, digests, started),
                        f"online round {index}: writing the round")
        self.last, self.previous = index, picks
        self.trainer.log_online(metrics(summary))

    def record(self, index: int, picks: list[int], summary: dict[str, Any], digests: list[str],
               started: float) -> None:
        """Main process: check that every process planned the same sample order, then write `round_<index>/`."""
        if len(set(digests)) != 1:
            raise RuntimeError(f"online round {index}: the processes planned different sample orders {digests}")
        summary |= {"processes": len(digests), "sequence_sha1": digests[0]}
        summary["seconds"]["total"] = round(time.perf_counter() - started, 3)
        write_round(self.root, index, [self.ids[p] for p in picks],
                    self.table.to_arrow(self.ids, self.config.score_column), summary)

    def select(self, index: int, epoch: int, offset: int | None, parts: list, state: TrainerState,
               scoring: float) -> list[Any]:
        """Main process: merge the gathered scores, select, and describe the round."""
        if offset is None:
            offset = max(drawn for drawn, _, _ in parts)
        if offset >= self.sampler.budget:  # everything in this epoch is drawn: the round opens the next one
            epoch, offset = epoch + 1, 0
        positions = [p for _, share, _ in parts for p in share]
        reasons = self.table.update(positions, [s for _, _, scores in parts for s in scores], index)
        started = time.perf_counter()
        mix = {}
        if self.shares is not None:
            self.shares, means = round_shares(self.config, self.candidates, self.table, self.shares, self.last is None)
            mix = {"mix": self.shares, "mix_scores": means}
        picks, details = select_round(self.candidates, self.table, self.config, self.trainer.args.seed + index,
                                      self.shares)
        summary = {
            "round": index,
            "trigger": self.config.every,
            "global_step": state.global_step,
            "epoch": epoch,
            "offset": offset,
            "scorer": self.config.scorer.type,
            "select": {"strategy": self.config.select.strategy, **vars(self.config.select.options)},
            "counts": {
                "candidates": len(self.candidates),
                "untrainable": self.untrainable,
                "rescored": len(positions),
                "unscorable": dict(reasons),
                "scored": sum(value is not None for value in self.table.values),
                "filtered": details["filtered"],
                "selected": len(picks),
                "changed": None if self.previous is None else len(set(picks) - set(self.previous)),
            },
            "filters": details["filters"],
            "scores": details["scores"],
            **mix,
            **({"mix_selected": details["mix"]} if "mix" in details else {}),
            "seconds": {"score": round(scoring, 3), "select": round(time.perf_counter() - started, 3)},
        }
        return [picks, (epoch, offset), summary]


def metrics(summary: dict[str, Any]) -> dict[str, float]:
    """What a round logs through the Trainer (`online/...`)."""
    counts, scores = summary["counts"], summary["scores"]
    values = {
        "online/round": summary["round"],
        "online/rescored": counts["rescored"],
        "online/unscorable": sum(counts["unscorable"].values()),
        "online/selected": counts["selected"],
        "online/score_seconds": summary["seconds"]["score"],
    }
    if counts["changed"] is not None:
        values["online/changed"] = counts["changed"]
    for part in ("scored", "selected"):
        if scores[part]["count"]:
            values[f"online/{part}_score_mean"] = scores[part]["mean"]
            values[f"online/{part}_score_std"] = scores[part]["std"]
    return values | {f"online/mix/{source}": share for source, share in summary.get("mix", {}).items()}
