"""Magpie steps 1 and 2 for a batch of conversations: sample each user turn from the template (or the conversation so
far), answer it through the chat template, for `turns` turns.

A first instruction that comes back empty, cut by the length limit, or a copy of the template drops its row, as does
a first answer that is empty or cut; the reason is counted, never papered over. A later turn that fails ends its
conversation at the turn before (counted too).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from deita_train.synth.backends.base import Completion, GenerationBackend
from deita_train.synth.config import SynthConfig
from deita_train.synth.prompting import Messages, Prompting


@dataclass
class Conversations:
    """Rows in order: each one's messages (possibly partial when dropped), why it was dropped (None: kept), and the
    counts and tokens of the steps."""

    messages: list[Messages]
    drop_reason: list[str | None]
    counts: Counter = field(default_factory=Counter)  # "turn <t> <step>: <reason>" -> rows
    instruction_tokens: int = 0
    response_tokens: int = 0


def instruction_problem(completion: Completion, prompting: Prompting) -> str | None:
    """Why a sampled instruction cannot be kept, or None."""
    if completion.finish_reason == "length":
        return "instruction cut by max_tokens"
    text = completion.text.strip()
    if not text:
        return "instruction empty"
    if prompting.is_template_copy(text):
        return "instruction copies the template"
    return None


def response_problem(completion: Completion) -> str | None:
    """Why an answer cannot be kept, or None."""
    if completion.finish_reason == "length":
        return "response cut by max_tokens"
    if not completion.text.strip():
        return "response empty"
    return None


def generate_conversations(backend: GenerationBackend, prompting: Prompting, config: SynthConfig, rows: int,
                           seeds: list[int]) -> Conversations:
    """`rows` conversations of up to `config.turns` turns; `seeds[2 t]`/`seeds[2 t + 1]` seed turn t's instructions
    and answers."""
    result = Conversations([[] for _ in range(rows)], [None] * rows)
    growing = list(range(rows))
    for turn in range(config.turns):
        prompts = [prompting.instruction_prompt(result.messages[i]) for i in growing]
        sampling = prompting.sampling(config.instruction, seeds[2 * turn],
                                      stop_at_newline=config.instruction.stop_at_newline)
        asked = []
        for i, [completion] in zip(growing, backend.complete(prompts, sampling), strict=True):
            result.instruction_tokens += completion.tokens
            if problem := instruction_problem(completion, prompting):
                stop(result, i, turn, problem)
                continue
            result.messages[i].append({"role": "user", "content": completion.text.strip()})
            asked.append(i)
        prompts = [prompting.response_prompt(result.messages[i]) for i in asked]
        answers = backend.complete(prompts, prompting.sampling(config.response, seeds[2 * turn + 1]))
        growing = []
        for i, [completion] in zip(asked, answers, strict=True):
            result.response_tokens += completion.tokens
            if problem := response_problem(completion):
                result.messages[i].pop()  # the unanswered question goes with its answer
                stop(result, i, turn, problem)
                continue
            result.messages[i].append({"role": "assistant", "content": completion.text.strip()})
            growing.append(i)
    return result


def stop(result: Conversations, row: int, turn: int, problem: str) -> None:
    """End row `row` at turn `turn` (0-based): drop it when nothing was answered yet; count why either way."""
    result.counts[f"turn {turn + 1}: {problem}"] += 1
    if turn == 0:
        result.drop_reason[row] = problem
