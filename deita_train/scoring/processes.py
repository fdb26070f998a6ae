"""The Accelerate process state the scoring engine shards over.

`accelerate launch --multi_gpu --num_processes N` on a machine without GPUs starts N processes, but
`PartialState()` only joins them (gloo) when asked for CPU; otherwise each would score the whole pool
alone. So on a CPU-only multi-process launch the state is created with `cpu=True`.
"""

from __future__ import annotations

import os

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    """This process's `PartialState` (created on first use, shared afterwards)."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())
