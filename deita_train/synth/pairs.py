"""DPO pairs from several sampled responses per instruction (docs/methods.md, Magpie synthesis), and reward scoring of
(instruction, response) pairs with the `reward` scorer (also the `reward` tag).

Chosen is the response with the highest reward, rejected the one with the lowest; ties at either end go to the first
index (`np.argmax`, `np.argmin`). Only non-empty responses with a finite reward take part. An instruction yields no
pair, counted by reason, when:
- `empty`: fewer than two of its responses are non-empty (not whitespace only);
- `unscored`: fewer than two non-empty responses have a finite reward;
- `tie`: the chosen and rejected rewards are equal (every candidate scored the same).
Rows are in TRL's conversational preference format: `prompt` (the user turn), `chosen` and `rejected` (one assistant
turn each), plus `chosen_reward`, `rejected_reward` and `all_rewards` (every response's reward, None if unscored).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from deita_train.scoring.base import Scorer


@dataclass
class PairResult:
    """The preference rows, the index of each row's instruction, and how many instructions gave none, by reason."""

    rows: list[dict[str, Any]]
    sources: list[int]
    dropped: Counter[str]


def pick_pair(responses: list[str], rewards: list[float | None]) -> tuple[int, int] | str:
    """(chosen, rejected) indices into `responses`, or the reason there is no pair."""
    candidates = [i for i, text in enumerate(responses) if text.strip()]
    if len(candidates) < 2:
        return "empty"
    scored = [i for i in candidates if rewards[i] is not None and math.isfinite(rewards[i])]
    if len(scored) < 2:
        return "unscored"
    values = np.array([rewards[i] for i in scored], dtype=np.float64)
    chosen, rejected = scored[int(np.argmax(values))], scored[int(np.argmin(values))]
    return "tie" if rewards[chosen] == rewards[rejected] else (chosen, rejected)


def build_pairs(
    instructions: list[str], responses: list[list[str]], rewards: list[list[float | None]]
) -> PairResult:
    """One preference row per instruction whose responses make a pair."""
    result = PairResult([], [], Counter())
    for index, (instruction, texts, values) in enumerate(zip(instructions, responses, rewards, strict=True)):
        if len(texts) != len(values):
            raise ValueError(f"instruction {index}: {len(texts)} responses but {len(values)} rewards")
        picked = pick_pair(texts, values)
        if isinstance(picked, str):
            result.dropped[picked] += 1
            continue
        chosen, rejected = picked
        result.rows.append({
            "prompt": [{"role": "user", "content": instruction}],
            "chosen": [{"role": "assistant", "content": texts[chosen]}],
            "rejected": [{"role": "assistant", "content": texts[rejected]}],
            "chosen_reward": values[chosen],
            "rejected_reward": values[rejected],
            "all_rewards": list(values),
        })
        result.sources.append(index)
    return result


def load_reward_scorer(options: dict[str, Any]) -> Scorer:
    """A loaded `reward` scorer with these options (`model` required), as under `score:`."""
    from deita_train.scoring.base import ScoringContext
    from deita_train.scoring.config import RewardScorerConfig
    from deita_train.scoring.reward import RewardScorer

    scorer = RewardScorer(RewardScorerConfig(type="reward", **options), ScoringContext())
    scorer.load()
    return scorer


def reward_values(
    scorer: Scorer, instructions: list[str], responses: list[str]
) -> tuple[list[float | None], list[str | None]]:
    """The reward of each (instruction, response) as a one-turn conversation, in chunks of the scorer's
    `shard_size` records (it batches by tokens within); None with the scorer's reason (e.g. `empty answer`)."""
    records = [{"id": i, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
               for i, (q, a) in enumerate(zip(instructions, responses, strict=True))]
    scores = []
    for start in range(0, len(records), scorer.config.shard_size):
        scores += scorer.score_batch(records[start : start + scorer.config.shard_size])
    return [score.value for score in scores], [score.reason for score in scores]
