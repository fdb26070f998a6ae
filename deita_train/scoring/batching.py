"""Length-sorted batches under a token budget, and right padding with attention masks.

Padding costs `batch size x longest sequence` tokens, so sequences are sorted by length (longest
first, so an out-of-memory shows at the first batch) and cut into batches whose padded size stays
under `batch_tokens` and whose shortest sequence is at least `MIN_FILL` of the longest (padding
under a third of the real tokens even when a few sequences of scattered lengths are scored).
"""

from __future__ import annotations

import torch

MIN_FILL = 0.75


def token_batches(lengths: list[int], batch_tokens: int, max_batch_size: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, grouped so that `len(batch) * max(length in batch) <= batch_tokens` and every length
    in a batch is at least `MIN_FILL` times its longest.

    A sequence longer than `batch_tokens` gets a batch of its own. Order: longest first; ties keep
    their original order, so the grouping is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        full = max_batch_size is not None and len(current) >= max_batch_size
        over = (len(current) + 1) * longest > batch_tokens or lengths[index] < MIN_FILL * longest
        if current and (full or over):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def right_pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` of shape [batch, longest], real tokens first, then `pad_id`."""
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)
