"""The steps of a synth run, one model each, run shard by shard: `generate` writes the conversations (and the DPO
candidates); each later phase reads a shard's kept rows and adds columns (tags, rewards, pairs).

A phase's `identity` is what its results depend on (config, model files); with the shard's generate key it keys the
cached shard, so a rerun reuses exactly the shards whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from deita_train.fingerprints import model_identity
from deita_train.synth.config import GeneratorConfig, SynthConfig

CANDIDATE_CUT = "candidate cut by max_tokens"


def derived_seed(*parts: Any) -> int:
    """A 31-bit seed from `parts` (the recipe seed, a shard, a step): the same parts give the same seed anywhere."""
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def generator_identity(config: GeneratorConfig) -> dict[str, Any]:
    """What a generator's text depends on: its options and model files (an endpoint: the served model's name)."""
    return {"config": asdict(config), "model": model_identity(config.model)}


class Phase(ABC):
    """One step over the shards, with one model loaded for all the shards a process runs."""

    name: str

    @abstractmethod
    def identity(self) -> Any:
        """What this phase's output depends on besides the shard's rows."""

    def load(self) -> None:  # noqa: B027  (phases without a model load nothing)
        """Load the model; called once before the first shard this process runs."""

    def close(self) -> None:  # noqa: B027
        """Free what `load` took."""

    @abstractmethod
    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        """This phase's columns for `rows` (with `id`), and the shard's stats (counts by cause, tokens, seconds)."""


class GeneratePhase(Phase):
    """Magpie steps 1 and 2 (and the DPO candidates) with the aligned model."""

    name = "generate"

    def __init__(self, config: SynthConfig, seed: int) -> None:
        self.config, self.seed = config, seed

    def identity(self) -> Any:
        config = self.config
        return {"generator": generator_identity(config.generator), "seed": self.seed, "turns": config.turns,
                "template": config.pre_query_template, "system_prompt": config.system_prompt,
                "instruction": asdict(config.instruction), "response": asdict(config.response),
                "pairs": None if config.pairs is None else {name: getattr(config.pairs, name) for name in
                                                            ("responses", "temperature", "top_p", "max_tokens")}}

    def load(self) -> None:
        from transformers import AutoTokenizer

        from deita_train.synth.backends import make_backend
        from deita_train.synth.prompting import Prompting

        generator = self.config.generator
        tokenizer = AutoTokenizer.from_pretrained(generator.model, trust_remote_code=generator.trust_remote_code)
        self.prompting = Prompting.for_model(tokenizer, self.config)
        self.backend = make_backend(generator)

    def close(self) -> None:
        self.backend.close()
        del self.backend, self.prompting

    def run(self, shard: int, rows: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        from deita_train.synth.conversations import generate_conversations

        config, ids = self.config, rows.column("id").to_pylist()
        seeds = [derived_seed(self.seed, shard, step) for step in range(2 * config.turns)]
        made = generate_conversations(self.backend, self.prompting, config, len(ids), seeds)
        columns = {
            "id": ids,
            "messages": made.messages,
            "instruction": [m[0]["content"] if m else None for m in made.messages],
            "response": [m[1]["content"] if len(m) > 1 else None for m in made.messages],
            "turns": [len(m) // 2 for m in made.messages],
            "drop_reason": made.drop_reason,
            **self.provenance(len(ids), seeds[0]),
        }
        stats = {"rows": len(ids), "dropped": dict(made.counts), "instruction_tokens": made.instruction_tokens,
                 "response_tokens": made.response_tokens}
        if config.pairs is not None:
            candidates, cut, tokens = self.candidates(made.messages, made.drop_reason, derived_seed(self.seed, shard,
                                                                                                    "pairs"))
            columns["candidates"] = candidates
            stats |= {"candidate_tokens": tokens, "candidates_cut": cut}
        return pa.table(columns), stats

    def provenance(self, rows: int, seed: int) -> dict[str, list[Any]]:
        """What made each row: model, backend, the template text and where it came from, sampling, seed."""
        sampling = json.dumps({"instruction": asdict(self.config.instruction),
                               "response": asdict(self.config.response)}, sort_keys=True)
        return {"model": [self.config.generator.model] * rows, "backend": [self.backend.name] * rows,
                "pre_query_template": [self.prompting.template] * rows,
                "template_source": [self.prompting.template_source] * rows,
                "sampling": [sampling] * rows, "seed": [seed] * rows}

    def candidates(self, messages: list[list[dict[str, str]]], dropped: list[str | None],
                   seed: int) -> tuple[list[list[str | None] | None], int, int]:
        """`pairs.responses` sampled answers to each kept row's first instruction (None for one cut by
        max_tokens), the number cut, and the tokens generated."""
        pairs = self.config.pairs
        kept = [i for i, reason in enumerate(dropped) if reason is None]
        prompts = [self.prompting.response_prompt(messages[i][:1]) for i in kept]
        sampling = self.prompting.sampling(pairs, seed, n=pairs.responses)
        out: list[list[str | None] | None] = [None] * len(messages)
        cut = tokens = 0
        for i, completions in zip(kept, self.backend.complete(prompts, sampling), strict=True):
            out[i] = [None if c.finish_reason == "length" else c.text.strip() for c in completions]
            cut += sum(c.finish_reason == "length" for c in completions)
            tokens += sum(c.tokens for c in completions)
        return out, cut, tokens
