"""`eval`: every N steps, held-out loss, MT-Bench first-turn generations and (with a judge) their score.

Logged to the active `report_to` backends as `eval/heldout_loss`, a generations table (`eval/generations`),
`eval/judge_score` (mean 1-10 rating over judged answers), `eval/judged` and `eval/judge_errors`; every
generation and judgment is appended to `<trainer output_dir>/eval/generations.jsonl`. Loss and generation
run on every process (ZeRO-3 needs all of them for each forward pass; they compute the same thing), the
judge and the writing only on the main process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset
from deita_train.callbacks.backends import ReportWriter
from deita_train.callbacks.base import CallbackConfig, RecipeCallback, register_callback
from transformers import TrainerControl, TrainerState, TrainingArguments

from deita_train.data.config import SourceConfig
from deita_train.evaluation.generation import generate
from deita_train.evaluation.judge import JudgeClient, JudgeConfig, summarize
from deita_train.evaluation.loss import heldout_loss
from deita_train.evaluation.mt_bench import judge_messages, questions


@dataclass
class EvalConfig(CallbackConfig):
    """Options of `eval`."""

    every_steps: int = field(default=500, metadata={"help": "Evaluate every N optimizer steps."})
    at_end: bool = field(default=True, metadata={"help": "Also evaluate after the last step."})
    dataset: list[SourceConfig] = field(
        default_factory=list,
        metadata={"help": "Held-out conversations (pool source syntax) for `eval/heldout_loss`; empty: no loss."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Use the first N held-out conversations."})
    max_length: int = field(default=2048, metadata={"help": "Truncate held-out conversations to N tokens."})
    num_prompts: int | None = field(
        default=None, metadata={"help": "MT-Bench first turns to answer (file order); None: all 80, 0: none."}
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per answer."})
    batch_size: int = field(default=8, metadata={"help": "Conversations per forward/generate batch."})
    judge: JudgeConfig | None = field(
        default=None, metadata={"help": "OpenAI-compatible judge scoring the answers 1-10; None: no judging."}
    )


@register_callback("eval")
class EvalCallback(RecipeCallback):
    """Held-out loss, MT-Bench generations and judged score at a step interval."""

    config_class = EvalConfig

    def __init__(self, config: EvalConfig, context) -> None:
        super().__init__(config, context)
        if config.every_steps < 1:
            raise ValueError(f"eval.every_steps: must be at least 1, got {config.every_steps}")
        prompts = questions() if config.num_prompts is None else questions()[: config.num_prompts]
        self.questions = list(prompts)
        self.judge = JudgeClient(config.judge) if config.judge is not None else None
        self.heldout: list[list[dict[str, str]]] = []
        if config.dataset:
            from deita_train.data.sources import load_sources

            rows, _ = load_sources(config.dataset, seed=0)
            self.heldout = held_out_messages(rows, config.max_samples)
        self.last_step = -1

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step % self.config.every_steps == 0:
            self.evaluate(args, state, kwargs["model"], kwargs["processing_class"])

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.config.at_end and state.global_step != self.last_step:
            self.evaluate(args, state, kwargs["model"], kwargs["processing_class"])

    def evaluate(self, args: TrainingArguments, state: TrainerState, model, tokenizer) -> dict[str, float]:
        """Run the evaluation at `state.global_step`; returns the scalars logged (main process)."""
        self.last_step = step = state.global_step
        scalars: dict[str, float] = {}
        if self.heldout:
            scalars["eval/heldout_loss"] = heldout_loss(
                model, tokenizer, self.heldout, self.config.max_length, self.config.batch_size
            )
        answers = generate(model, tokenizer, [[{"role": "user", "content": q.turns[0]}] for q in self.questions],
                           self.config.max_new_tokens, self.config.batch_size) if self.questions else []
        if not state.is_world_process_zero:
            return scalars
        records = [{"step": step, "question_id": q.question_id, "category": q.category, "prompt": q.turns[0],
                    "answer": a} for q, a in zip(self.questions, answers, strict=True)]
        if self.judge is not None and records:
            judgments = []
            for question, record in zip(self.questions, records, strict=True):
                prompt_name, messages = judge_messages(question, [record["answer"]])
                judgment = self.judge.judge(messages)
                judgments.append(judgment)
                record |= {"judge_prompt": prompt_name, **asdict(judgment)}
            summary = summarize(judgments)
            scalars["eval/judged"] = float(summary["judged"])
            scalars["eval/judge_errors"] = float(summary["judge_errors"])
            if summary["judge_score"] is not None:
                scalars["eval/judge_score"] = summary["judge_score"]
        writer = ReportWriter(args)
        if scalars:
            writer.scalars(scalars, step)
        if records:
            columns = [c for c in ("question_id", "category", "prompt", "answer", "rating") if c in records[0]]
            writer.table("eval/generations", columns, [[r[c] for c in columns] for r in records], step)
        writer.close()
        path = Path(args.output_dir) / "eval" / "generations.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return scalars


def held_out_messages(rows: Dataset, max_samples: int | None) -> list[list[dict[str, str]]]:
    """The `messages` of the first `max_samples` held-out rows."""
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    return [[{"role": m["role"], "content": m["content"]} for m in messages] for messages in rows["messages"]]
