"""What generation needs from the aligned model's tokenizer: the pre-query template, the prefix that opens the next
user turn, its end-of-turn stops, and conversations rendered through its chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deita_train.synth.backends.base import Sampling
from deita_train.synth.config import SamplingConfig, SynthConfig
from deita_train.synth.templates import end_of_turn_stops, multi_turn_user_prefix, resolve_pre_query_template

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Prompting:
    """The aligned model's prompts: `template` opens a conversation at the user's turn (`template_source` says where
    it came from: `derived`, `table:<name>` or `explicit`)."""

    tokenizer: Any
    template: str
    template_source: str
    stops: tuple[str, ...]
    stop_ids: tuple[int, ...]
    system_prompt: str | None
    user_prefix: str | None  # what follows a rendered conversation to open the next user turn; None: one turn only

    @classmethod
    def for_model(cls, tokenizer: Any, config: SynthConfig) -> Prompting:
        """Resolve `synth.pre_query_template` and the stops for `tokenizer` (the generator's)."""
        if not tokenizer.chat_template:
            raise ValueError(f"synth.generator.model: {config.generator.model} has no chat template, which "
                             "answering instructions needs; use the aligned (instruct) model's tokenizer")
        template, source = resolve_pre_query_template(config.pre_query_template, tokenizer, config.generator.model,
                                                      config.system_prompt)
        stops, stop_ids = end_of_turn_stops(tokenizer)
        prefix = multi_turn_user_prefix(tokenizer) if config.turns > 1 else None
        return cls(tokenizer, template, source, tuple(stops), tuple(stop_ids), config.system_prompt, prefix)

    def with_system(self, messages: Messages) -> Messages:
        return ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + messages

    def instruction_prompt(self, messages: Messages) -> str:
        """Text whose continuation is the next user message: the template for a new conversation, else the prompt
        that produced the last answer, that answer, and the prefix that ends it and opens a user turn."""
        if not messages:
            return self.template
        return self.response_prompt(messages[:-1]) + messages[-1]["content"] + self.user_prefix

    def response_prompt(self, messages: Messages) -> str:
        """The conversation so far, ending with the opening of the assistant's answer."""
        return self.tokenizer.apply_chat_template(self.with_system(messages), tokenize=False,
                                                  add_generation_prompt=True)

    def sampling(self, options: SamplingConfig, seed: int, n: int = 1, stop_at_newline: bool = False) -> Sampling:
        stops = (*self.stops, "\n") if stop_at_newline else self.stops
        return Sampling(max_tokens=options.max_tokens, temperature=options.temperature, top_p=options.top_p, n=n,
                        stop=stops, stop_token_ids=self.stop_ids, seed=seed)

    def is_template_copy(self, text: str) -> bool:
        """Whether an instruction only repeats the template: a piece of it, or the template's text inside it."""
        core = self.template.strip()
        return text in self.template or (bool(core) and core in text)
