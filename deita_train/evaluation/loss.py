"""Held-out loss: mean cross-entropy on the assistant tokens of held-out conversations.

Assistant tokens are those inside the chat template's `{% generation %}` markers, as in training with
`assistant_only_loss` (docs/methods.md, the Deita-7B recipe); the loss is averaged over all those tokens of the set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def encode(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], max_length: int):
    """(input ids, labels with -100 outside assistant tokens), truncated to `max_length` tokens."""
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    if not any(encoded["assistant_masks"]):
        raise ValueError("the chat template marks no assistant tokens; held-out loss needs a template with "
                         "{% generation %} markers (model.chat_template: chatml or vicuna_v1.1)")
    ids, mask = encoded["input_ids"][:max_length], encoded["assistant_masks"][:max_length]
    return ids, [t if m else -100 for t, m in zip(ids, mask, strict=True)]


@torch.inference_mode()
def heldout_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
    max_length: int,
    batch_size: int,
) -> float:
    """Token-averaged assistant-token cross-entropy over `conversations` (every process must call it under
    ZeRO-3, where each forward pass gathers its layers)."""
    encoded = [encode(tokenizer, c, max_length) for c in conversations]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            pad = tokenizer.pad_token_id
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
            attention_mask = torch.tensor(
                [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device
            )
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            targets = labels[:, 1:]
            losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="sum")
            total += losses.item()
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no assistant tokens left in the held-out conversations after truncation to max_length")
    return total / count
