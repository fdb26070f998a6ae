"""`deita_complexity` and `deita_quality`: Deita's scorers (docs/methods.md, Deita scorers; Liu et al., ICLR 2024).

Each turn is scored on its own, without earlier context: the turn fills the scorer's prompt, one
forward pass gives the next-token logits after it, and the score is the expected value of the digit
under a softmax over the logits of the tokens "1".."6" only: sum_i i * softmax(l_1..l_6)_i, in [1, 6].
The digit ids come from the tokenizer. Text that does not fit `max_length` is cut (never the
template) and counted; nothing is ever scored 3.0 by default (the reference's silent fallback).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from deita_train.data.conversation import Turn, has_empty_answer, turns
from deita_train.scoring import lm
from deita_train.scoring.base import Record, Score, Scorer, register_scorer
from deita_train.scoring.config import DeitaScorerConfig

COMPLEXITY_TEMPLATE = (
    "You are a helpful assistant. Please identify the complexity score of the following user query. \n"
    "##Query: {instruction}  \n##Complexity: "
)
QUALITY_TEMPLATE = (
    "You are a helpful assistant. Please identify the quality score of the Response corresponding to the Question. \n"
    " #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
)
DIGITS = ("1", "2", "3", "4", "5", "6")


def expected_digit(digit_logits: torch.Tensor) -> torch.Tensor:
    """sum_i i * softmax(logits)_i over the last axis, holding the logits of "1".."6" (docs/methods.md)."""
    weights = torch.arange(1, digit_logits.shape[-1] + 1, dtype=torch.float64)
    return (torch.softmax(digit_logits.double(), dim=-1) * weights).sum(dim=-1)


def digit_ids(tokenizer) -> list[int]:
    """Ids of the single tokens "1".."6"; a tokenizer without them cannot be a Deita scorer."""
    vocab = tokenizer.get_vocab()
    missing = [digit for digit in DIGITS if digit not in vocab]
    if missing:
        raise ValueError(f"the scorer tokenizer has no single token for {missing}: Deita scores read the logits of "
                         "the tokens '1'..'6'; use the released Deita scorers or a tokenizer with digit tokens")
    return [vocab[digit] for digit in DIGITS]


def truncated_text(tokenizer, text: str, tokens: int) -> str:
    """The longest prefix of `text` covering its first `tokens` tokens (cut at a token boundary)."""
    if tokens <= 0:
        return ""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text if tokens >= len(offsets) else text[: offsets[tokens - 1][1]]


def allot(counts: dict[str, int], budget: int) -> dict[str, int]:
    """Share `budget` tokens between fields: short fields keep everything, long ones split what is left evenly."""
    shares, left = {}, budget
    for position, name in enumerate(sorted(counts, key=counts.get)):
        shares[name] = min(counts[name], left // (len(counts) - position))
        left -= shares[name]
    return shares


class DeitaScorer(Scorer):
    """One expected-digit score per turn from a Deita scorer model; subclasses give the template and its fields."""

    config_class = DeitaScorerConfig
    per_turn = True
    template: ClassVar[str]
    reads_answer: ClassVar[bool] = False  # a record with an empty answer is then unscorable ("empty answer")

    @abstractmethod
    def fields(self, turn: Turn) -> dict[str, str]:
        """The template's fields for one turn."""

    def models(self) -> list[str]:
        return [lm.model_name(self.config, self.context)]

    def load(self) -> None:
        self.use(lm.load_model(self.config, self.context), lm.load_tokenizer(self.config, self.context))

    def use(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Score with a model already in memory instead of `load` (e.g. a randomly initialised one in a benchmark)."""
        self.model, self.tokenizer = model, tokenizer
        self.digits = digit_ids(self.tokenizer)
        self.bos = lm.bos_prefix(self.tokenizer)
        empty = len(self.bos) + len(lm.encode(self.tokenizer, self.template.format(instruction="", output="")))
        self.text_budget = self.config.max_length - empty
        if self.text_budget <= 0:
            raise ValueError(f"score.<column>.max_length: {self.config.max_length} tokens do not hold the "
                             f"{self.name} template alone ({empty} tokens); raise max_length")

    def close(self) -> None:
        del self.model, self.tokenizer

    def prompt_ids(self, fields: dict[str, str]) -> tuple[list[int], bool]:
        """BOS + the filled template, its fields cut so that it fits `max_length`; and whether anything was cut."""
        ids = self.bos + lm.encode(self.tokenizer, self.template.format(**fields))
        if len(ids) <= self.config.max_length:
            return ids, False
        counts = {name: len(lm.encode(self.tokenizer, text)) for name, text in fields.items()}
        shares = allot(counts, self.text_budget)
        while True:  # filling can merge tokens at the field edges: trim the longest field until it fits
            cut = {name: truncated_text(self.tokenizer, text, shares[name]) for name, text in fields.items()}
            ids = self.bos + lm.encode(self.tokenizer, self.template.format(**cut))
            over = len(ids) - self.config.max_length
            if over <= 0:
                return ids, True
            longest = max(shares, key=shares.get)
            shares[longest] -= over

    def score_batch(self, batch: list[Record]) -> list[Score]:
        prompts, cut, counts = [], [], []
        for record in batch:
            empty = self.reads_answer and has_empty_answer(record["messages"])
            record_turns = [] if empty else turns(record["messages"])
            for turn in record_turns:
                ids, truncated = self.prompt_ids(self.fields(turn))
                prompts.append(ids)
                cut.append(truncated)
            counts.append(None if empty else len(record_turns))
        logits = lm.next_token_logits(self.model, prompts, self.digits, lm.pad_id(self.tokenizer),
                                      self.config.batch_tokens, self.config.max_batch_size)
        values = expected_digit(logits).tolist()
        scores, start = [], 0
        for count in counts:
            if count is None:
                scores.append(Score.unscorable("empty answer"))
                continue
            scores.append(Score(value=values[start : start + count], truncated=any(cut[start : start + count])))
            start += count
        return scores


@register_scorer("deita_complexity")
class DeitaComplexityScorer(DeitaScorer):
    """Complexity of each user query (hkust-nlp/deita-complexity-scorer)."""

    template = COMPLEXITY_TEMPLATE

    def fields(self, turn: Turn) -> dict[str, str]:
        return {"instruction": turn.user}


@register_scorer("deita_quality")
class DeitaQualityScorer(DeitaScorer):
    """Quality of each answer given its query (hkust-nlp/deita-quality-scorer)."""

    template = QUALITY_TEMPLATE
    reads_answer = True

    def fields(self, turn: Turn) -> dict[str, str]:
        return {"instruction": turn.user, "output": turn.assistant}
