"""`token_batches`: every sequence once, longest first, under the token budget, padding bounded by `MIN_FILL`."""

from __future__ import annotations

import random

from deita_train.scoring.batching import MIN_FILL, right_pad, token_batches


def test_batches_cover_every_sequence_under_the_budget_and_the_fill():
    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(1, 40), rng.randint(100, 900)]) for _ in range(500)] + [3000]
    batches = token_batches(lengths, batch_tokens=2048, max_batch_size=64)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(lengths, reverse=True)  # longest first
    assert batches[0] == [500]  # longer than the budget: alone
    for batch in batches[1:]:
        longest = lengths[batch[0]]
        assert len(batch) * longest <= 2048 and len(batch) <= 64
        assert min(lengths[i] for i in batch) >= MIN_FILL * longest
    padded = sum(len(batch) * lengths[batch[0]] for batch in batches)
    assert padded < sum(lengths) / MIN_FILL


def test_scattered_lengths_do_not_share_a_batch_however_large_the_budget():
    assert token_batches([400, 20, 390, 10, 12], batch_tokens=1 << 20) == [[0, 2], [1], [4, 3]]


def test_ties_keep_their_order():
    assert token_batches([5, 5, 5, 5], batch_tokens=10) == [[0, 1], [2, 3]]


def test_right_pad_masks_the_padding():
    input_ids, mask = right_pad([[7, 8, 9], [4]], pad_id=0, device="cpu")
    assert input_ids.tolist() == [[7, 8, 9], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
