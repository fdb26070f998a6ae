"""The phases after generation, each adding columns to a shard's kept rows: the judge's tags, the guard's verdict,
the reward of (instruction, response), the language, and the DPO pair picked from the candidates' rewards.

A value that cannot be had (a malformed judge answer, an unscorable record) is null with its reason beside it, and
counted by reason in the shard's stats; nothing is guessed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from deita_train.fingerprints import model_identity
from deita_train.synth.config import GeneratorConfig, SynthConfig, TagsConfig
from deita_train.synth.phases import Phase, derived_seed, generator_identity


def tag_phases(config: SynthConfig, seed: int) -> list[Phase]:
    """The phases `config` asks for, in the order they run."""
    tags, found = config.tags, []
    if tags is not None:
        if tags.tags:
            found.append(JudgePhase(tags, seed))
        if tags.safety is not None:
            found.append(SafetyPhase(tags.safety, seed))
        if tags.reward is not None:
            found.append(RewardPhase(tags.reward))
        if tags.language:
            found.append(LanguagePhase())
    if config.pairs is not None:
        found.append(PairPhase(config.pairs.reward))
    return found


class ModelPhase(Phase):
    """A phase that asks a generator (judge, guard) through its backend."""

    def __init__(self, generator: GeneratorConfig, seed: int) -> None:
        self.generator, self.seed = generator, seed

    def load(self) -> None:
        from transformers import AutoTokenizer

        from deita_train.synth.backends import make_backend
        from deita_train.synth.templates import end_of_turn_stops

        self.tokenizer = AutoTokenizer.from_pretrained(self.generator.model,
                                                       trust_remote_code=self.generator.trust_remote_code)
        if not self.tokenizer.chat_template:
            raise ValueError(f"synth.tags.{self.name}.model: {self.generator.model} has no chat template; the "
                             f"{self.name} reads prompts in its own template")
        self.stop_ids = tuple(end_of_turn_stops(self.tokenizer)[1])
        self.backend = make_backend(self.generator)

    def close(self) -> None:
        self.backend.close()
        del self.backend, self.tokenizer


class JudgePhase(ModelPhase):
    """Difficulty, input quality and task category from an LLM judge's JSON answers (docs/methods.md)."""

    name = "judge"

    def __init__(self, tags: TagsConfig, seed: int) -> None:
        super().__init__(tags.judge, seed)
        self.tags, self.max_tokens = tags.tags, tags.judge_max_tokens

    def identity(self) -> Any:
        return {"judge": generator_identity(self.generator), "tags": self.tags, "max_tokens": self.max_tokens}

    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        from deita_train.synth.tags import tag_instructions

        result = tag_instructions(rows.column("instruction").to_pylist(), self.backend, self.tokenizer, self.tags,
                                  self.max_tokens, derived_seed(self.seed, shard, "judge"), self.stop_ids)
        columns: dict[str, Any] = {"id": rows.column("id")}
        for tag in self.tags:
            columns |= {tag: pa.array(result.labels[tag], pa.string()),
                        f"{tag}_reason": pa.array(result.reasons[tag], pa.string())}
        failed = {f"{tag}: {reason}": count for tag, counts in result.failures().items()
                  for reason, count in counts.items()}
        return pa.table(columns), {"failed": failed}


class SafetyPhase(ModelPhase):
    """A guard model's verdict on (instruction, response): `safe`, or `unsafe` with its categories."""

    name = "safety"

    def identity(self) -> Any:
        return {"guard": generator_identity(self.generator)}

    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        from deita_train.synth.safety import guard_pairs

        result = guard_pairs(rows.column("instruction").to_pylist(), rows.column("response").to_pylist(),
                             self.backend, self.tokenizer, derived_seed(self.seed, shard, "safety"),
                             stop_token_ids=self.stop_ids)
        return pa.table({"id": rows.column("id"), "safety": pa.array(result.verdicts, pa.string()),
                         "safety_categories": pa.array(result.categories, pa.string()),
                         "safety_reason": pa.array(result.reasons, pa.string())}), {"failed": dict(result.failures())}


class RewardPhase(Phase):
    """The `reward` scorer on each (instruction, first response)."""

    name = "reward"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def identity(self) -> Any:
        return {"reward": self.options, "model": model_identity(self.options["model"])}

    def load(self) -> None:
        from deita_train.synth.pairs import load_reward_scorer

        self.scorer = load_reward_scorer(self.options)

    def close(self) -> None:
        self.scorer.close()
        del self.scorer

    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        from deita_train.synth.pairs import reward_values

        values, reasons = reward_values(self.scorer, rows.column("instruction").to_pylist(),
                                        rows.column("response").to_pylist())
        return (pa.table({"id": rows.column("id"), "reward": pa.array(values, pa.float64()),
                          "reward_reason": pa.array(reasons, pa.string())}),
                {"failed": dict(Counter(r for r in reasons if r is not None))})


class LanguagePhase(Phase):
    """The instruction's language (ISO 639-1), from a detector whose model ships in its package."""

    name = "language"

    def identity(self) -> Any:
        return {"detector": "langdetect"}

    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        from deita_train.synth.language import detect_languages

        result = detect_languages(rows.column("instruction").to_pylist())
        return (pa.table({"id": rows.column("id"), "language": pa.array(result.codes, pa.string()),
                          "language_reason": pa.array(result.reasons, pa.string())}),
                {"failed": dict(result.failures())})


class PairPhase(RewardPhase):
    """Reward every DPO candidate; chosen = highest, rejected = lowest (first index on ties), no pair when the two
    tie, fewer than two candidates are usable (`empty`: cut or blank) or scored (`unscored`)."""

    name = "pairs"

    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        from deita_train.synth.pairs import pick_pair, reward_values

        instructions = rows.column("instruction").to_pylist()
        candidates = [[text or "" for text in row] for row in rows.column("candidates").to_pylist()]
        flat = [(q, a) for q, answers in zip(instructions, candidates, strict=True) for a in answers if a]
        rewarded, _ = reward_values(self.scorer, [q for q, _ in flat], [a for _, a in flat]) if flat else ([], [])
        scored = iter(rewarded)
        out: dict[str, list[Any]] = {name: [] for name in ("candidate_rewards", "chosen", "rejected", "chosen_reward",
                                                           "rejected_reward", "pair_reason")}
        for answers in candidates:
            rewards = [next(scored) if a else None for a in answers]
            picked = pick_pair(answers, rewards)
            chosen, rejected = (None, None) if isinstance(picked, str) else picked
            out["candidate_rewards"].append(rewards)
            out["chosen"].append(None if chosen is None else answers[chosen])
            out["rejected"].append(None if rejected is None else answers[rejected])
            out["chosen_reward"].append(None if chosen is None else rewards[chosen])
            out["rejected_reward"].append(None if rejected is None else rewards[rejected])
            out["pair_reason"].append(picked if isinstance(picked, str) else None)
        table = pa.table({"id": rows.column("id"),
                          "candidate_rewards": pa.array(out.pop("candidate_rewards"), pa.list_(pa.float64())),
                          **{name: pa.array(column, pa.float64() if name.endswith("reward") else pa.string())
                             for name, column in out.items()}})
        return table, {"dropped": dict(Counter(r for r in out["pair_reason"] if r is not None))}
