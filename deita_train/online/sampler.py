"""The training sampler of online selection: a pure function of the rounds so far, the epoch and the seed.

The Trainer builds its data loader once; Accelerate wraps this sampler (`BatchSamplerShard` hands every
process its share of the *same* index sequence, so every process holds an identical sampler) and the loader
draws indices lazily, one batch ahead of training (`DataLoaderShard` prefetches a batch). So a round can
change the rest of an epoch: it takes effect at a sample `offset` at or beyond everything any process has
drawn, and the earlier samples keep the order they were drawn from. Epoch e of round r is the round's
selection shuffled with the seed (seed, r, e), cycled if it is shorter than the budget, and cut to the
budget: `len()` is the budget in every epoch, so the number of optimizer steps per epoch never changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Round:
    """One round's selection and where it starts: sample `offset` of `epoch` (0: the epoch's first sample)."""

    index: int
    epoch: int
    offset: int
    positions: list[int]  # rows of the train dataset, in selection order


class OnlineSampler(Sampler[int]):
    """Yields `budget` rows of the train dataset per epoch, from the round in effect at each sample."""

    def __init__(self, budget: int, seed: int) -> None:
        self.budget = budget
        self.seed = seed
        self.rounds: list[Round] = []
        self.epoch = 0
        self.drawn = 0  # samples yielded so far in the current pass
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.budget

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through Accelerate's loader) before each epoch's iterator is created."""
        self.epoch = epoch

    def add(self, new: Round) -> None:
        """Put `new` in effect from its epoch and offset; it must not rewrite samples already drawn."""
        if self.rounds and (new.epoch, new.offset) < (self.rounds[-1].epoch, self.rounds[-1].offset):
            raise ValueError(f"online round {new.index} starts before round {self.rounds[-1].index}")
        if new.epoch == self.epoch and new.offset < self.drawn:
            raise RuntimeError(f"online round {new.index} starts at sample {new.offset} of epoch {new.epoch}, "
                               f"but this process has drawn {self.drawn}")
        if not new.positions:
            raise ValueError(f"online round {new.index} selected no rows")
        self.rounds.append(new)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        for i in range(self.budget):
            position = self.position(epoch, i)
            self.drawn = i + 1  # before `yield`: the consumer holds this sample while the generator is suspended
            yield position

    def position(self, epoch: int, i: int) -> int:
        """The row at sample `i` of `epoch`, given the rounds known now."""
        current = next((r for r in reversed(self.rounds) if (r.epoch, r.offset) <= (epoch, i)), None)
        if current is None:
            raise RuntimeError(f"online selection: no round in effect at sample {i} of epoch {epoch}")
        start = current.offset if current.epoch == epoch else 0
        return int(self.order(current, epoch)[i - start])

    def order(self, chosen: Round, epoch: int) -> np.ndarray:
        """`chosen`'s rows shuffled with (seed, round, epoch), repeated until they fill the budget."""
        key = (chosen.index, epoch)
        if key not in self._orders:
            rng = np.random.default_rng([self.seed, chosen.index, epoch])
            positions = np.asarray(chosen.positions, dtype=np.int64)
            passes = -(-self.budget // len(positions))
            self._orders = {k: v for k, v in self._orders.items() if k[1] == epoch}  # keep one epoch's orders
            self._orders[key] = np.concatenate([rng.permutation(positions) for _ in range(passes)])[: self.budget]
        return self._orders[key]

    def digest(self, epoch: int) -> str:
        """A hash of the whole planned sequence of `epoch`: equal on every process when they agree."""
        sequence = np.array([self.position(epoch, i) for i in range(self.budget)], dtype=np.int64)
        return hashlib.sha1(sequence.tobytes()).hexdigest()
