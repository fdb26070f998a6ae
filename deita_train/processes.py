"""The Accelerate process state every stage shares, and work done once on the main process.

`accelerate launch --multi_gpu --num_processes N` on a machine without GPUs starts N processes, but
`PartialState()` only joins them (gloo) when asked for CPU; otherwise each would score the whole pool
alone. So on a CPU-only multi-process launch the state is created with `cpu=True`.

Work done on the main process alone (selection, merging shards, an online round's choice) goes through
`on_main_process`: its result, or its failure, reaches every process. Without that, a failure there
leaves the other processes waiting in the next collective until the distributed timeout (on one node the
launcher tears them down; across nodes nothing does).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from deita_train.errors import UserError

T = TypeVar("T")


class MainProcessError(RuntimeError):
    """Raised on the other processes when work on the main process failed (the main process raises the original)."""


class MainProcessUserError(MainProcessError, UserError):
    """A `MainProcessError` whose original was a `UserError`: the CLI shows its message, without a traceback."""


def process_state() -> PartialState:
    """This process's `PartialState` (created on first use, shared afterwards)."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())


def on_main_process(task: Callable[[], T], what: str) -> T:
    """Run `task` on the main process; every process returns its (picklable) result or raises its failure (the
    others a `MainProcessError`, a `MainProcessUserError` when the failure was a `UserError`)."""
    state = process_state()
    if state.num_processes == 1:
        return task()
    outcome: list = [None, None, False]
    if state.is_main_process:
        try:
            outcome = [task(), None, False]
        except Exception as error:
            broadcast_object_list([None, f"{type(error).__name__}: {error}", isinstance(error, UserError)])
            raise
    result, failure, users = broadcast_object_list(outcome)
    if failure is not None:
        raise (MainProcessUserError if users else MainProcessError)(f"{what} failed on the main process: {failure}")
    return result
