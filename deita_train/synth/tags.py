"""LLM-judge tags on an instruction (docs/methods.md, Magpie synthesis): difficulty, input quality and task category.

Each tag has one prompt in the spirit of Magpie's tagging prompts, asking for a JSON object with fixed keys. The
prompt goes through the judge's chat template (a user turn, `add_generation_prompt=True`) and the assistant turn is
prefilled with `{`, so the answer is `{` + the completion. The judge runs greedily.

Parsing is strict, and nothing is guessed. The answer must be exactly one JSON object (surrounding whitespace
allowed; the backend has already removed the end-of-turn token), and its key must hold one of the tag's labels
exactly, case and spacing included (`very easy`, `Coding & Debugging`). Otherwise the tag is None and the row's
reason is one of:
- `length`: the judge hit `max_tokens` (a cut answer is never read, even when it parses);
- `invalid_json`: not a single JSON object (prose or a code fence around it, a cut string, ...);
- `missing_key`: the object lacks the tag's key;
- `wrong_case`: the value is a label in another case (`Hard`), told apart to diagnose a judge;
- `unknown_label`: any other value (another word, a number, a list).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deita_train.synth.backends.base import Completion, GenerationBackend, Sampling

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PREFILL = "{"

DIFFICULTY = ("very easy", "easy", "medium", "hard", "very hard")
QUALITY = ("very poor", "poor", "average", "good", "excellent")
CATEGORY = ("Information seeking", "Reasoning", "Planning", "Editing", "Coding & Debugging", "Math", "Role playing",
            "Data analysis", "Creative writing", "Advice seeking", "Brainstorming", "Others")

DIFFICULTY_PROMPT = """# Task
Identify what the user wants and the knowledge needed to answer, then rate how difficult the user query is.

## User query
```
{instruction}
```

## Output format
Answer with this JSON object only, nothing before or after it, replacing each [...]:
{{
    "intent": "The user wants to [...]",
    "knowledge": "To answer, a model needs to know [...]",
    "difficulty": "[very easy/easy/medium/hard/very hard]"
}}"""

QUALITY_PROMPT = """# Task
Rate the quality of the user query: its clarity, specificity and coherence.
- very poor: unclear, vague or incoherent; essential information and context are missing.
- poor: somewhat unclear or missing important details; it needs significant clarification.
- average: moderately clear and specific; some additional information may be needed.
- good: clear, specific and mostly well-formed; enough context to understand the intent.
- excellent: very clear, specific and well-articulated; all the information and context needed.

## User query
```
{instruction}
```

## Output format
First assess the query's strengths and weaknesses, then give the rating. Answer with this JSON object only, nothing
before or after it, replacing each [...]:
{{
    "explanation": "[...]",
    "input_quality": "[very poor/poor/average/good/excellent]"
}}"""

CATEGORY_PROMPT = """# Task
Label the task category of the user query with the most relevant tag from this list:
- "Information seeking": specific information or facts about a topic.
- "Reasoning": logical thinking, problem solving or processing complex ideas.
- "Planning": plans or strategies for activities and projects.
- "Editing": editing, rephrasing, proofreading or other work on written text.
- "Coding & Debugging": writing, reviewing or fixing code.
- "Math": mathematical concepts, problems and calculations.
- "Role playing": adopting a character or persona in a scenario.
- "Data analysis": interpreting data or statistics, analytical tasks.
- "Creative writing": stories, poems or other creative texts.
- "Advice seeking": recommendations or guidance on personal or professional matters.
- "Brainstorming": generating ideas, exploring possibilities.
- "Others": anything that fits none of the above.

## User query
```
{instruction}
```

## Output format
Choose exactly one primary tag; list any other applicable tags. Write each tag exactly as in the list. Answer with
this JSON object only, nothing before or after it, replacing each <...>:
{{
    "primary_tag": "<primary tag>",
    "other_tags": ["<tag>", ...]
}}"""


@dataclass(frozen=True)
class TagSpec:
    """One judge tag: its prompt (with an `{instruction}` field), the JSON key holding the label, the labels."""

    prompt: str
    key: str
    labels: tuple[str, ...]


TAGS = {
    "difficulty": TagSpec(DIFFICULTY_PROMPT, "difficulty", DIFFICULTY),
    "input_quality": TagSpec(QUALITY_PROMPT, "input_quality", QUALITY),
    "task_category": TagSpec(CATEGORY_PROMPT, "primary_tag", CATEGORY),
}


@dataclass
class TagResult:
    """Per tag, one label per instruction (None when the answer was malformed) and the reason for each None."""

    labels: dict[str, list[str | None]]
    reasons: dict[str, list[str | None]]

    def failures(self) -> dict[str, Counter[str]]:
        """Per tag, how many answers failed for each reason."""
        return {tag: Counter(r for r in reasons if r is not None) for tag, reasons in self.reasons.items()}


def judge_prompt(tokenizer: PreTrainedTokenizerBase, tag: str, instruction: str) -> str:
    """The tag's question about `instruction` as a user turn in the judge's chat template, prefilled with `{`."""
    messages = [{"role": "user", "content": TAGS[tag].prompt.format(instruction=instruction)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + PREFILL


def parse_tag(completion: Completion, spec: TagSpec) -> tuple[str | None, str | None]:
    """(label, None) when `{` + the completion is a JSON object holding one of `spec.labels` under `spec.key`, else
    (None, reason)."""
    if completion.finish_reason == "length":
        return None, "length"
    try:
        answer = json.loads(PREFILL + completion.text)
    except json.JSONDecodeError:
        return None, "invalid_json"
    if spec.key not in answer:
        return None, "missing_key"
    label = answer[spec.key]
    if label in spec.labels:
        return label, None
    if isinstance(label, str) and label.lower() in {known.lower() for known in spec.labels}:
        return None, "wrong_case"
    return None, "unknown_label"


def greedy_sampling(
    tokenizer: PreTrainedTokenizerBase, max_tokens: int, seed: int, stop_token_ids: tuple[int, ...] = ()
) -> Sampling:
    """Greedy, one answer, stopping at `stop_token_ids` (the model's end-of-turn tokens; by default its EOS)."""
    stops = stop_token_ids or ((tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ())
    return Sampling(max_tokens=max_tokens, temperature=0.0, n=1, stop_token_ids=stops, seed=seed)


def tag_instructions(
    instructions: list[str],
    backend: GenerationBackend,
    tokenizer: PreTrainedTokenizerBase,
    tags: list[str],
    max_tokens: int,
    seed: int,
    stop_token_ids: tuple[int, ...] = (),
) -> TagResult:
    """Ask the judge each tag's question about every instruction (greedy, one answer each) and parse the answers;
    `stop_token_ids`: the judge's end-of-turn tokens (default: its EOS)."""
    sampling = greedy_sampling(tokenizer, max_tokens, seed, stop_token_ids)
    labels: dict[str, list[str | None]] = {}
    reasons: dict[str, list[str | None]] = {}
    for tag in tags:
        answers = backend.complete([judge_prompt(tokenizer, tag, text) for text in instructions], sampling)
        parsed = [parse_tag(completions[0], TAGS[tag]) for completions in answers]
        labels[tag] = [label for label, _ in parsed]
        reasons[tag] = [reason for _, reason in parsed]
    return TagResult(labels, reasons)
