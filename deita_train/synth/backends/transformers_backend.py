"""transformers `generate` behind the backend contract: batches of left-padded prompts, sampled or greedy.

Generation stops at `sampling.stop_token_ids` and the model's own EOS ids (vLLM stops at EOS too), and at
`sampling.stop` through transformers' `stop_strings`. Text is decoded without special tokens, as vLLM returns it,
and cut before the first stop string. `tokens` counts the generated tokens up to and including the stop token, or
the token that completed the stop string; padding after a finished sequence is not counted. transformers also
matches a stop string that begins in the prompt (`:)` when the prompt ends in `:` and the first new token is
`)`): such a completion ends there, finish reason `stop`, though its text holds no stop string.

The model's `generation_config` sampling defaults (top_k, repetition_penalty, ...) are dropped: the `Sampling`
alone decides, as with vLLM's offline engine and explicit `SamplingParams`.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from deita_train.processes import process_state
from deita_train.scoring.lm import DTYPES, outside_zero3_init
from deita_train.synth.backends.base import Completion, GenerationBackend, Sampling, samples_per_request
from deita_train.synth.config import GeneratorConfig


class TransformersBackend(GenerationBackend):
    """`model.generate` on this process's device, `config.batch_size` prompts per call."""

    name = "transformers"

    def __init__(self, config: GeneratorConfig) -> None:
        self.batch_size = config.batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(
            config.model, trust_remote_code=config.trust_remote_code, padding_side="left"
        )
        if self.tokenizer.pad_token is None:  # padded positions are masked out; any id works
            self.tokenizer.pad_token = self.tokenizer.eos_token
        with outside_zero3_init():
            model = AutoModelForCausalLM.from_pretrained(
                config.model, dtype=DTYPES[config.dtype], trust_remote_code=config.trust_remote_code
            )
        eos = model.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.append(self.tokenizer.eos_token_id)
        model.generation_config = GenerationConfig()
        self.model = model.to(process_state().device).eval()

    @torch.inference_mode()
    def complete(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions per prompt; the global torch RNG is seeded with `sampling.seed` first, so a call's
        results do not depend on what ran before it."""
        torch.manual_seed(sampling.seed)
        stop_ids = list(dict.fromkeys([*sampling.stop_token_ids, *self.eos_ids]))
        config = self._generation_config(sampling, stop_ids)
        per_prompt = config.num_return_sequences
        results: list[list[Completion]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(
                prompts[start : start + self.batch_size], add_special_tokens=False, padding=True, return_tensors="pt"
            ).to(self.model.device)
            output = self.model.generate(**batch, generation_config=config, tokenizer=self.tokenizer)
            rows = [self._completion(row, sampling, set(stop_ids))
                    for row in output[:, batch["input_ids"].shape[1] :].tolist()]
            for first in range(0, len(rows), per_prompt):  # greedy: one row per prompt, `n` copies
                results.append(rows[first : first + per_prompt] * (sampling.n // per_prompt))
        return results

    def _generation_config(self, sampling: Sampling, stop_ids: list[int]) -> GenerationConfig:
        greedy = sampling.temperature == 0
        sampled = {} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        return GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            num_return_sequences=samples_per_request(sampling),
            eos_token_id=stop_ids or None,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(sampling.stop) or None,
            **sampled,
        )

    def _completion(self, row: list[int], sampling: Sampling, stop_ids: set[int]) -> Completion:
        """One generated row (new tokens, then padding once the row finished) as a `Completion`."""
        end = next((i for i, token in enumerate(row) if token in stop_ids), None)
        if end is not None:
            generated, tokens, stopped = row[:end], end + 1, True
        else:  # a row that stopped early (at a stop string) is padded to the batch's length
            tokens = len(row)
            while tokens and row[tokens - 1] == self.tokenizer.pad_token_id:
                tokens -= 1
            generated, stopped = row[:tokens], tokens < sampling.max_tokens
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        cuts = [text.index(stop) for stop in sampling.stop if stop in text]
        if cuts:
            text, stopped = text[: min(cuts)], True
        return Completion(text, "stop" if stopped else "length", tokens)
