"""`ifd`: Instruction-Following Difficulty (docs/methods.md, IFD; Li et al., NAACL 2024 and ACL 2024).

For an answer A to a prompt Q, with the mean per-token losses
  Lc = mean_i -log p(a_i | prompt(Q), a_<i)      (conditioned pass)
  Ld = mean_i -log p(a_i | prefix, a_<i)         (direct pass; prefix = BOS when the tokenizer adds one)
Superfiltering (default) reports exp(Lc) / exp(Ld); Cherry LLM reports Lc / Ld. The answer starts
where the prompt part, tokenized on its own, ends: a token merged across that boundary (GPT-2's
"\\n\\n") belongs to the prompt and is not scored. Without BOS (GPT-2) the direct pass cannot
predict a_1, which is left out of Ld. Truncation cuts the answer's tail, and the direct pass is
given as many answer tokens as the conditioned pass kept. Multi-turn: one IFD per assistant turn,
the earlier turns written into the prompt. The two losses per turn are kept as extra columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from deita_train.data.conversation import turns
from deita_train.scoring import lm
from deita_train.scoring.base import Record, Score, Scorer, register_scorer
from deita_train.scoring.config import Convention, IFDScorerConfig, TurnLossConfig

CHERRY_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:"
)
CHERRY_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
DEFAULT_MAX_LENGTH = {"superfiltering": 1024, "cherry": 512}
def instruction_prompt(convention: Convention, instruction: str, input_text: str) -> str:
    """The prompt before the answer: Superfiltering's `{instruction}\\n[{input}\\n]` or Cherry's Alpaca template."""
    if convention == "superfiltering":
        return f"{instruction}\n{input_text}\n" if input_text else f"{instruction}\n"
    template = CHERRY_PROMPT_INPUT if input_text else CHERRY_PROMPT
    return template.format(instruction=instruction, input=input_text)


def direct_prefix(convention: Convention) -> str:
    """Text before the answer in the direct pass: nothing (Superfiltering), `### Response:` (Cherry)."""
    return "" if convention == "superfiltering" else "### Response:"


def turn_texts(record: Record, convention: Convention) -> list[tuple[str, str]]:
    """(prompt, answer) per assistant turn; earlier turns, each as prompt + answer + separator, lead the prompt.

    A one-turn record with Alpaca `instruction`/`input` fields uses them, so Cherry's with-input
    template is exact; otherwise the user message is the instruction. A system message opens the prompt.
    """
    record_turns = turns(record["messages"])
    separator = "\n" if convention == "superfiltering" else "\n\n"
    if len(record_turns) == 1 and isinstance(record.get("instruction"), str):
        only = instruction_prompt(convention, record["instruction"], record.get("input") or "")
        return [(only, record_turns[0].assistant)]
    context = record_turns[0].system + separator if record_turns and record_turns[0].system else ""
    texts = []
    for turn in record_turns:
        prompt = context + instruction_prompt(convention, turn.user, "")
        texts.append((prompt, turn.assistant))
        context = prompt + turn.assistant + separator
    return texts


@dataclass(frozen=True)
class TurnPasses:
    """Token ids of one turn's two passes and where each pass's scored span starts."""

    conditioned: list[int]
    conditioned_start: int
    direct: list[int]
    direct_start: int
    truncated: bool


def turn_passes(encode: Callable[[str], list[int]], bos: list[int], prompt: str, answer: str, prefix: str | None,
                max_length: int) -> TurnPasses | str:
    """Both passes of one turn (the conditioned one only when `prefix` is None), or the reason it cannot be scored.

    `encode` gives a text's token ids without special tokens (`lm.encode`, or a lookup of `lm.encode_many`).
    """
    if not answer.strip():
        return "empty answer"
    start = len(bos) + len(encode(prompt))
    if start >= max_length:
        return "prompt fills max_length"
    whole = bos + encode(prompt + answer)
    truncated = len(whole) > max_length
    whole = whole[:max_length]
    kept = len(whole) - start
    if kept <= 0:
        return "empty answer"
    if prefix is None:
        return TurnPasses(whole, start, [], 0, truncated)
    direct_start = len(bos) + len(encode(prefix))
    direct = bos + encode(prefix + answer)
    first = max(direct_start, 1)  # with neither BOS nor prefix, a_1 has nothing to be predicted from
    direct = direct[: first + kept] if truncated else direct[:max_length]
    if len(direct) <= first:
        return "answer is one token and the tokenizer adds no BOS"
    return TurnPasses(whole, start, direct, first, truncated)


def pass_texts(record: Record, convention: Convention, direct: bool) -> list[str]:
    """Every text `record_passes` encodes for `record`."""
    prefix = direct_prefix(convention)
    extra = (lambda answer: [prefix, prefix + answer]) if direct else (lambda answer: [])
    return [text for prompt, answer in turn_texts(record, convention)
            for text in (prompt, prompt + answer, *extra(answer))]


def record_passes(encode: Callable[[str], list[int]], bos: list[int], record: Record, convention: Convention,
                  max_length: int, direct: bool = True) -> list[TurnPasses] | str:
    """Every turn's passes, or the reason of the first turn that cannot be scored (the record then has no value)."""
    passes = []
    prefix = direct_prefix(convention) if direct else None
    for prompt, answer in turn_texts(record, convention):
        turn = turn_passes(encode, bos, prompt, answer, prefix, max_length)
        if isinstance(turn, str):
            return turn
        passes.append(turn)
    return passes


def mean_loss(losses) -> float:
    """Mean of a turn's per-token losses, in float64."""
    return float(losses.double().mean())


class TurnLossScorer(Scorer):
    """Loads one causal LM and turns each record's passes (`record_passes`) into mean answer-token losses."""

    config_class = TurnLossConfig
    per_turn = True
    fields = ("instruction", "input")  # Alpaca records' own prompt (`turn_texts`)
    sync_batches: Callable[[int], int] | None = None  # see `lm.token_losses`; set by `use` under ZeRO-3

    def models(self) -> list[str]:
        return [lm.model_name(self.config, self.context)]

    def load(self) -> None:
        self.use(lm.load_model(self.config, self.context), lm.load_tokenizer(self.config, self.context))

    def use(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            sync_batches: Callable[[int], int] | None = None) -> None:
        """Score with a model already in memory (online selection: the model being trained) instead of `load`."""
        self.model, self.tokenizer, self.sync_batches = model, tokenizer, sync_batches
        self.bos = lm.bos_prefix(tokenizer)
        self.max_length = self.config.max_length or DEFAULT_MAX_LENGTH[self.config.convention]

    def close(self) -> None:
        del self.model, self.tokenizer

    def prepare(self, batch: list[Record], direct: bool) -> list[list[TurnPasses] | str]:
        """Every record's passes, or the reason it cannot be scored; the batch's texts are tokenized in one call."""
        convention = self.config.convention
        ids = lm.encode_many(self.tokenizer, [text for r in batch for text in pass_texts(r, convention, direct)])
        return [record_passes(ids.__getitem__, self.bos, r, convention, self.max_length, direct) for r in batch]

    def mean_losses(
        self, prepared: list[list[TurnPasses] | str], part: Callable[[TurnPasses], tuple[list[int], int]]
    ) -> list[list[float] | None]:
        """One batched pass over every scorable turn's `part` (tokens, first scored position); per record, the
        mean loss of each turn (None for an unscorable record)."""
        parts = [part(t) for p in prepared if not isinstance(p, str) for t in p]
        losses = lm.token_losses(self.model, [ids for ids, _ in parts], [start for _, start in parts],
                                 lm.pad_id(self.tokenizer), self.config.batch_tokens, self.config.max_batch_size,
                                 self.sync_batches)
        means = iter(mean_loss(turn) for turn in losses)
        return [None if isinstance(p, str) else [next(means) for _ in p] for p in prepared]


@register_scorer("ifd")
class IFDScorer(TurnLossScorer):
    """One IFD per assistant turn, with `loss_cond` and `loss_direct` (mean losses per turn) kept beside it."""

    config_class = IFDScorerConfig

    def score_batch(self, batch: list[Record]) -> list[Score]:
        prepared = self.prepare(batch, direct=True)
        conditioned = self.mean_losses(prepared, lambda t: (t.conditioned, t.conditioned_start))
        direct = self.mean_losses(prepared, lambda t: (t.direct, t.direct_start))
        scores = []
        for passes, lc, ld in zip(prepared, conditioned, direct, strict=True):
            if isinstance(passes, str):
                scores.append(Score.unscorable(passes))
                continue
            if self.config.convention == "superfiltering":
                value = [math.exp(c) / math.exp(d) for c, d in zip(lc, ld, strict=True)]
            else:
                value = [c / d for c, d in zip(lc, ld, strict=True)]
            scores.append(Score(value=value, truncated=any(t.truncated for t in passes),
                                extras={"loss_cond": lc, "loss_direct": ld}))
        return scores
