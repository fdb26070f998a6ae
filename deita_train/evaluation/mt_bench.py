"""MT-Bench questions and single-answer judge prompts (lm-sys/FastChat `llm_judge`, Apache-2.0).

Reference: Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", NeurIPS 2023. As FastChat's
`gen_judgment.py` does, math, reasoning and coding questions are judged against GPT-4's reference answer
(`single-math-v1`), the others with `single-v1`; the second turn with the `-multi-turn` prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

NEED_REFERENCE = ("math", "reasoning", "coding")  # FastChat `common.py` NEED_REF_CATS


@dataclass(frozen=True)
class Question:
    """One MT-Bench question: two user turns, and GPT-4's reference answers where the category needs them."""

    question_id: int
    category: str
    turns: tuple[str, str]
    reference: tuple[str, str] | None = None


@dataclass(frozen=True)
class JudgePrompt:
    """A single-answer judge prompt: its system message and a template filled with the question and answer."""

    name: str
    system_prompt: str
    prompt_template: str


def read_jsonl(name: str) -> list[dict]:
    text = resources.files("deita_train.evaluation").joinpath(f"data/{name}").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@cache
def questions() -> tuple[Question, ...]:
    """The 80 questions in file order."""
    references = {r["question_id"]: tuple(r["choices"][0]["turns"]) for r in read_jsonl(
        "mt_bench_reference_answers.jsonl")}
    return tuple(
        Question(
            question_id=q["question_id"],
            category=q["category"],
            turns=tuple(q["turns"]),
            reference=references[q["question_id"]] if q["category"] in NEED_REFERENCE else None,
        )
        for q in read_jsonl("mt_bench_questions.jsonl")
    )


@cache
def judge_prompts() -> dict[str, JudgePrompt]:
    return {p["name"]: JudgePrompt(p["name"], p["system_prompt"], p["prompt_template"])
            for p in read_jsonl("mt_bench_judge_prompts.jsonl")}


def judge_messages(question: Question, answers: list[str]) -> tuple[str, list[dict[str, str]]]:
    """The judge prompt's name and chat messages for the answer to turn `len(answers)` (1 or 2)."""
    turn = len(answers)
    multi = "-multi-turn" if turn == 2 else ""
    name = ("single-math-v1" if question.reference is not None else "single-v1") + multi
    prompt = judge_prompts()[name]
    if turn == 1:
        fields = {"question": question.turns[0], "answer": answers[0]}
        if question.reference is not None:
            fields["ref_answer_1"] = question.reference[0]
    else:
        fields = {"question_1": question.turns[0], "question_2": question.turns[1],
                  "answer_1": answers[0], "answer_2": answers[1]}
        if question.reference is not None:
            fields |= {"ref_answer_1": question.reference[0], "ref_answer_2": question.reference[1]}
    return name, [
        {"role": "system", "content": prompt.system_prompt},
        {"role": "user", "content": prompt.prompt_template.format(**fields)},
    ]
