"""What a pass over a source shows while it runs: `datasets` progress bars for passes worth watching, none for small
ones (a bar before a one-line error message is only noise), and no log lines from a builder whose failure is handled
(the line reader takes over and names the line)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

WATCHED_ROWS = 50_000  # a pass over fewer rows takes about a second: no progress bar
WATCHED_BYTES = 16 << 20  # a file smaller than this is read in about a second: no progress bar


@contextmanager
def progress_bars(shown: bool) -> Iterator[None]:
    """`datasets` progress bars as they are when `shown`, off otherwise; never turns on bars the user turned off."""
    import datasets
    import datasets.config

    if shown or datasets.are_progress_bars_disabled() or datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is False:
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence the logger `name` (a `datasets` builder's) while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
