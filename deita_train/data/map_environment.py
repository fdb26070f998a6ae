"""The process environment as it was before a `Dataset.map(num_proc=...)`.

For its worker processes, datasets sets `TOKENIZERS_PARALLELISM=false` and afterwards restores `os.environ` by
assigning a copy of it, which leaves the C environment at "false" (datasets 5.2). The Rust tokenizers of this
process read that one: the length scorer's `encode_batch_fast` and every later tokenization then ran on one thread,
1.6x slower for a 1M-row pool on 2 cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


@contextmanager
def tokenizers_parallelism_kept() -> Iterator[None]:
    """Put `TOKENIZERS_PARALLELISM` back as it was (unset, or its value) in the C environment, too, on exit."""
    before = os.environ.get(TOKENIZERS_PARALLELISM)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKENIZERS_PARALLELISM, None)
            os.unsetenv(TOKENIZERS_PARALLELISM)
        else:
            os.environ[TOKENIZERS_PARALLELISM] = before
