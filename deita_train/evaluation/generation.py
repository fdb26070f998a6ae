"""Greedy chat generation with the model being trained or a saved one.

Under DeepSpeed ZeRO-3 each process holds a shard of every weight: generation gathers the full weights with
`deepspeed.zero.GatheredParameters` for its duration, on every process (all processes must run it together).
FSDP-sharded models are refused: generating from them needs the wrapped module's `summon_full_params`,
which a callback does not see.
"""

from __future__ import annotations

import contextlib
import os

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.integrations import is_deepspeed_zero3_enabled


def fsdp_enabled() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in {"1", "true"}


def full_weights(model: PreTrainedModel):
    """A context in which `model` holds its full weights: gathered under ZeRO-3, as is otherwise."""
    if fsdp_enabled():
        raise RuntimeError("generation under FSDP is not supported by deita-train's eval; run it under DeepSpeed "
                           "ZeRO-2/3 or DDP, or turn generation off (eval callback: num_prompts: 0)")
    if is_deepspeed_zero3_enabled():
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Greedy replies to each conversation (ending with a user message), in order.

    Prompts are rendered with the tokenizer's chat template and left-padded in batches; the model is put in
    eval mode and returned to the mode it was in.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set one (tokenizer.pad_token) to generate in batches")
    prompts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        for c in conversations
    ]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    replies = []
    try:
        with full_weights(model):
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                width = max(len(p) for p in batch)
                pad = tokenizer.pad_token_id
                input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
                attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
                output = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                    do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                    use_cache=True,
                )
                replies += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [reply.strip() for reply in replies]
