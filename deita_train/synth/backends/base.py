"""The generation contract every backend meets: raw prompts in, `n` completions per prompt out.

Prompts are text already rendered (a pre-query template, or a conversation through the chat template); a backend
never applies a chat template itself and adds no special tokens of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Sampling:
    """How to sample: `temperature` 0 is greedy; generation stops at any of `stop` (strings, not kept in the
    text) or `stop_token_ids` (tokens, not kept), or after `max_tokens` new tokens (finish reason `length`)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """One generated continuation: its text (stop string or token removed), why it ended, and its token count."""

    text: str
    finish_reason: FinishReason
    tokens: int


class GenerationBackend(ABC):
    """Generates continuations of raw prompts. Results are in prompt order, `sampling.n` per prompt, and depend only
    on the prompts, the sampling and `sampling.seed` (not on what else ran before in the process)."""

    name: str

    @abstractmethod
    def complete(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt, in order."""

    def close(self) -> None:  # noqa: B027  (backends holding nothing free nothing)
        """Free the model or connection pool."""


def samples_per_request(sampling: Sampling) -> int:
    """Completions to generate per prompt: greedy decoding gives `n` equal copies, so one is generated and copied."""
    return 1 if sampling.temperature == 0 else sampling.n


def request_seed(seed: int, index: int) -> int:
    """The seed of prompt `index` in a call seeded with `seed`, for engines that seed each request: distinct per
    prompt, so identical prompts (every instruction prompt is the same template) still get different samples."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)  # 31 bits: a non-negative int32
