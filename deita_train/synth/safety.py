"""Safety of an (instruction, response) pair from a guard model (Llama-Guard style), run through a backend.

The conversation [user instruction, assistant response] goes through the guard tokenizer's own chat template (which
writes the policy and asks about the last turn); the guard answers greedily `safe`, or `unsafe` and on the next line
the violated categories (`S1,S10`). Parsing is strict (surrounding whitespace allowed): anything else is no verdict,
with the reason counted:
- `length`: the guard hit `max_tokens`;
- `unknown_verdict`: the first line is neither `safe` nor `unsafe`;
- `extra_lines`: `safe` followed by more text, or `unsafe` followed by more than a category line;
- `missing_categories`: `unsafe` with no category line;
- `invalid_categories`: the category line is not comma-separated codes `S<n>` (no spaces).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from deita_train.synth.backends.base import Completion, GenerationBackend
from deita_train.synth.tags import greedy_sampling

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Verdict = Literal["safe", "unsafe"]
CATEGORIES = re.compile(r"S\d+(?:,S\d+)*")


@dataclass
class GuardResult:
    """One verdict per pair (None when the answer was malformed), the categories of `unsafe` ones, and the reason
    for each missing verdict."""

    verdicts: list[Verdict | None]
    categories: list[str | None]
    reasons: list[str | None]

    def failures(self) -> Counter[str]:
        """How many answers failed for each reason."""
        return Counter(r for r in self.reasons if r is not None)


def guard_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, response: str) -> str:
    """The pair rendered by the guard's chat template, ready for its verdict."""
    messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def parse_verdict(completion: Completion) -> tuple[Verdict | None, str | None, str | None]:
    """(verdict, categories, reason): ("safe", None, None), ("unsafe", "S1,S10", None) or (None, None, reason)."""
    if completion.finish_reason == "length":
        return None, None, "length"
    lines = completion.text.strip().split("\n")
    if lines[0] == "safe":
        return ("safe", None, None) if len(lines) == 1 else (None, None, "extra_lines")
    if lines[0] != "unsafe":
        return None, None, "unknown_verdict"
    if len(lines) == 1:
        return None, None, "missing_categories"
    if len(lines) > 2:
        return None, None, "extra_lines"
    if not CATEGORIES.fullmatch(lines[1]):
        return None, None, "invalid_categories"
    return "unsafe", lines[1], None


def guard_pairs(
    instructions: list[str],
    responses: list[str],
    backend: GenerationBackend,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    max_tokens: int = 32,
    stop_token_ids: tuple[int, ...] = (),
) -> GuardResult:
    """The guard's verdict on each (instruction, response) pair, greedy; `max_tokens` bounds its short answer;
    `stop_token_ids`: the guard's end-of-turn tokens (default: its EOS)."""
    sampling = greedy_sampling(tokenizer, max_tokens, seed, stop_token_ids)
    prompts = [guard_prompt(tokenizer, q, a) for q, a in zip(instructions, responses, strict=True)]
    parsed = [parse_verdict(completions[0]) for completions in backend.complete(prompts, sampling)]
    return GuardResult([v for v, _, _ in parsed], [c for _, c, _ in parsed], [r for _, _, r in parsed])
