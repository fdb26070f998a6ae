"""Causal-LM passes for scorers: loading, BOS handling, and the three batched reads scorers need.

- `token_losses`: -log p(token | prefix) for a span of each sequence (IFD, perplexity);
- `next_token_logits`: a few vocabulary entries of the next-token logits at the last token (Deita);
- `pooled_hidden`: the final hidden state at the last real token, or its masked mean (embeddings).

Each runs the decoder once per length-sorted, token-budgeted batch (right padding, attention
masks, `torch.inference_mode()`), and applies the LM head only to the positions it needs, so no
batch ever materializes full-vocabulary logits for every position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from deita_train.scoring.base import ScoringContext
from deita_train.scoring.batching import right_pad, token_batches
from deita_train.scoring.config import ModelScorerConfig

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEAD_ROWS = 2048  # LM-head rows computed at once: bounds the fp32 logits held to HEAD_ROWS x vocab
# Config fields of models whose logits are not `lm_head(last_hidden_state)`; applying only the head would be wrong.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def model_name(config: ModelScorerConfig, context: ScoringContext) -> str:
    """The scoring model: the scorer's `model`, else the recipe's model."""
    name = config.model or context.model_name_or_path
    if name is None:
        raise ValueError(f"score.<column>.model: the {config.type} scorer needs a model: set `model` on the scorer "
                         "or the recipe's model.name_or_path")
    return name


def load_tokenizer(config: ModelScorerConfig, context: ScoringContext) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_name(config, context), trust_remote_code=config.trust_remote_code)


def load_model(config: ModelScorerConfig, context: ScoringContext, auto_class=AutoModelForCausalLM) -> PreTrainedModel:
    """The scoring model in eval mode on this process's device (Accelerate's `PartialState`)."""
    from deita_train.processes import process_state

    with outside_zero3_init():
        model = auto_class.from_pretrained(
            model_name(config, context),
            dtype=DTYPES[config.dtype],
            attn_implementation=config.attn_implementation,
            trust_remote_code=config.trust_remote_code,
        )
    if auto_class is AutoModelForCausalLM:
        for name in LOGIT_TRANSFORMS:
            if getattr(model.config, name, None) not in (None, 1.0):
                raise ValueError(f"{model_name(config, context)}: its config sets {name}, which these scorers do not "
                                 "apply to logits; use a model without it")
    return model.to(process_state().device).eval()


@contextmanager
def outside_zero3_init() -> Iterator[None]:
    """Build whole weights even while a ZeRO-3 run's DeepSpeed config is active in transformers (which would build
    the model under `deepspeed.zero.Init`, partitioned): every process scores with its own full replica."""
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = hf_deepspeed._hf_deepspeed_config_weak_ref  # transformers' only handle on the active config
    active = reference() if reference is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if active is not None:
            hf_deepspeed.set_hf_deepspeed_config(active)


def bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """`[bos_id]` when the tokenizer puts BOS in front of what it encodes (LLaMA, Mistral), else `[]` (GPT-2)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    special = tokenizer("x")["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and special[:1] == [bos] and special[1 : 1 + len(plain)] == plain:
        return [bos]
    return []


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of `text` with no special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_many(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, list[int]]:
    """Token ids (no special tokens) of each distinct text, from one batched call (the Rust tokenizer's threads)."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return {}
    return dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"], strict=True))


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id written in padded positions; masked out, so any id works when the tokenizer has no pad token."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


@torch.inference_mode()
def last_hidden(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's final hidden states (after its final norm), shape [batch, length, hidden]."""
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


@torch.inference_mode()
def token_losses(
    model: PreTrainedModel, sequences: list[list[int]], starts: list[int], pad: int, batch_tokens: int,
    max_batch_size: int | None = None, sync_batches: Callable[[int], int] | None = None,
) -> list[torch.Tensor]:
    """Per-token cross-entropy (fp32) of `sequences[i][starts[i]:]`, each token predicted from the ones before it.

    `starts[i] >= 1`; the result for sequence i has `len(sequences[i]) - starts[i]` entries.

    `sync_batches` keeps processes in step under DeepSpeed ZeRO-3 (online scoring), where every module call
    gathers that module's parameters from all processes, so all must make the same calls in the same order: it
    maps this process's count (of decoder passes, then of LM-head calls in each pass) to the count every process
    makes (the maximum). The extra decoder passes run on a one-token dummy sequence, the extra head calls on no
    rows; their outputs are discarded.
    """
    head = model.get_output_embeddings()
    losses: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    batches = token_batches([len(s) for s in sequences], batch_tokens, max_batch_size)
    count = sync_batches or (lambda n: n)
    for slot in range(count(len(batches))):
        batch = batches[slot] if slot < len(batches) else []  # []: a dummy pass
        input_ids, attention_mask = right_pad([sequences[i] for i in batch] or [[pad]], pad, model.device)
        hidden = last_hidden(model, input_ids, attention_mask)
        if not batch:
            rows, targets = hidden[0, :0], input_ids[0, :0]
        else:  # position p predicts token p + 1: the hidden states at [start - 1, len - 1) predict the span.
            rows = torch.cat([hidden[r, starts[i] - 1 : len(sequences[i]) - 1] for r, i in enumerate(batch)])
            targets = torch.cat([input_ids[r, starts[i] : len(sequences[i])] for r, i in enumerate(batch)])
        pieces = [
            F.cross_entropy(head(rows[k : k + HEAD_ROWS]).float(), targets[k : k + HEAD_ROWS], reduction="none")
            for k in range(0, count(-(-len(rows) // HEAD_ROWS)) * HEAD_ROWS, HEAD_ROWS)
        ]
        if batch:
            flat = torch.cat(pieces).cpu()
            for piece, i in zip(flat.split([len(sequences[i]) - starts[i] for i in batch]), batch, strict=True):
                losses[i] = piece
    return losses


@torch.inference_mode()
def next_token_logits(
    model: PreTrainedModel, sequences: list[list[int]], token_ids: list[int], pad: int, batch_tokens: int,
    max_batch_size: int | None = None,
) -> torch.Tensor:
    """fp32 logits of `token_ids` for the token after each sequence's last one: [len(sequences), len(token_ids)]."""
    head = model.get_output_embeddings()
    out = torch.empty(len(sequences), len(token_ids))
    for batch in token_batches([len(s) for s in sequences], batch_tokens, max_batch_size):
        input_ids, attention_mask = right_pad([sequences[i] for i in batch], pad, model.device)
        hidden = last_hidden(model, input_ids, attention_mask)
        last = torch.tensor([len(sequences[i]) - 1 for i in batch], device=hidden.device)
        logits = head(hidden[torch.arange(len(batch), device=hidden.device), last]).float()
        out[batch] = logits[:, token_ids].cpu()
    return out


@torch.inference_mode()
def pooled_hidden(
    model: PreTrainedModel, sequences: list[list[int]], pooling: Literal["last_token", "mean"], pad: int,
    batch_tokens: int, max_batch_size: int | None = None,
) -> torch.Tensor:
    """fp32 final hidden state at each sequence's last token (`last_token`) or its mean over real tokens (`mean`)."""
    out = torch.empty(len(sequences), model.config.hidden_size)
    for batch in token_batches([len(s) for s in sequences], batch_tokens, max_batch_size):
        input_ids, attention_mask = right_pad([sequences[i] for i in batch], pad, model.device)
        hidden = last_hidden(model, input_ids, attention_mask).float()
        if pooling == "last_token":
            last = attention_mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(len(batch), device=hidden.device), last]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        out[batch] = pooled.cpu()
    return out
