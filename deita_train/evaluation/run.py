"""`run_eval`: a saved model answers both MT-Bench turns; a judge rates each answer.

Writes under `out_dir`: `answers.jsonl` (FastChat's model-answer layout: `question_id`, `model_id`,
`category`, `turns`), `judgments.jsonl` (one line per question and turn: judge prompt, rating or error, the
judge's reply; only with a judge) and `summary.json` (mean rating overall, per turn and per category, with
the counts of judged answers and errors).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer

from deita_train.data.chat_templates import apply_chat_template
from deita_train.evaluation.generation import generate
from deita_train.evaluation.judge import JudgeClient, JudgeConfig, Judgment, summarize
from deita_train.evaluation.mt_bench import judge_messages, questions
from deita_train.storage import write_json


def run_eval(
    model_path: str | Path,
    out_dir: Path,
    judge: JudgeConfig | None,
    *,
    num_questions: int | None = None,
    max_new_tokens: int = 1024,
    batch_size: int = 8,
    chat_template: str = "model",
    device: str | None = None,
) -> dict[str, Any]:
    """Answer, judge and summarize; returns the summary written to `out_dir/summary.json`.

    `chat_template` is a name `model.chat_template` accepts (`model` keeps the tokenizer's own, which a
    deita-train SFT output carries). `device` defaults to CUDA when available.
    """
    import torch

    client = JudgeClient(judge) if judge is not None else None  # a missing API key fails before generating
    tokenizer = apply_chat_template(AutoTokenizer.from_pretrained(str(model_path)), chat_template)
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype="auto")
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    chosen = list(questions() if num_questions is None else questions()[:num_questions])
    first = generate(model, tokenizer, [[{"role": "user", "content": q.turns[0]}] for q in chosen],
                     max_new_tokens, batch_size)
    second = generate(model, tokenizer, [
        [{"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": a},
         {"role": "user", "content": q.turns[1]}] for q, a in zip(chosen, first, strict=True)
    ], max_new_tokens, batch_size)
    model_id = Path(model_path).name
    answers = [{"question_id": q.question_id, "model_id": model_id, "category": q.category, "turns": [a1, a2]}
               for q, a1, a2 in zip(chosen, first, second, strict=True)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "answers.jsonl", answers)
    summary: dict[str, Any] = {"model": str(model_path), "questions": len(chosen), "judge": None}
    if client is not None:
        rows = []
        for question, answer in zip(chosen, answers, strict=True):
            for turn in (1, 2):
                prompt_name, messages = judge_messages(question, answer["turns"][:turn])
                rows.append(({"question_id": question.question_id, "category": question.category, "turn": turn,
                              "judge_prompt": prompt_name}, client.judge(messages)))
        write_jsonl(out_dir / "judgments.jsonl", [meta | asdict(judgment) for meta, judgment in rows])
        summary |= {"judge": {"base_url": judge.base_url, "model": judge.model}, **summarize_rows(rows)}
    write_json(out_dir / "summary.json", summary)
    return summary


def summarize_rows(rows: list[tuple[dict[str, Any], Judgment]]) -> dict[str, Any]:
    """Overall, per-turn and per-category means (FastChat `show_result.py` reports the same)."""
    def part(keep) -> dict[str, Any]:
        return summarize([judgment for meta, judgment in rows if keep(meta)])

    categories = sorted({meta["category"] for meta, _ in rows})
    return {
        **summarize([judgment for _, judgment in rows]),
        "turns": {str(turn): part(lambda m, t=turn: m["turn"] == t) for turn in (1, 2)},
        "categories": {c: part(lambda m, c=c: m["category"] == c) for c in categories},
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
