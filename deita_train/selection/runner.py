"""The select stage: filters, then the strategy; writes `selected/`, `selection.json` and `report/`.

`selection.json` records the strategy and its parameters, counts at each step (`pool`; `scored`: rows
with no null in the columns the strategy reads; one entry per filter; `filtered`; `selected`), what
the strategy found, the report's figures, and seconds per step (and their total).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from deita_train.selection.base import STRATEGIES, SelectConfig, Strategy
from deita_train.selection.filters import apply_filters
from deita_train.selection.report import write_report
from deita_train.selection.scores import arrow_column
from deita_train.storage import save_dataset, write_json


def select(scored: Dataset, config: SelectConfig, seed: int, output_dir: Path) -> tuple[Dataset, dict[str, Any]]:
    """Apply `config` to `scored`; write `<output_dir>/selected/`, `selection.json` and `report/`."""
    seconds: dict[str, float] = {}
    strategy = STRATEGIES.get(config.strategy, "select.strategy")(config.options, seed)
    picks, positions, filter_steps = choose(scored, config, strategy, seconds)

    started = time.perf_counter()
    selected = scored.select(picks)
    save_dataset(selected, output_dir / "selected")
    seconds["write"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    figures = write_report(scored, picks, output_dir / "report", seed)
    seconds["report"] = round(time.perf_counter() - started, 3)
    seconds["total"] = round(sum(seconds.values()), 3)

    summary = {
        **strategy.parameters(),
        "filters": filter_steps,
        "counts": {
            "pool": len(scored),
            "scored": count_scored(scored, strategy.columns()),
            "filtered": len(positions),
            "selected": len(selected),
        },
        "found": strategy.details(),
        "report": figures,
        "seconds": seconds,
    }
    write_json(output_dir / "selection.json", summary)
    return selected, summary


def choose(scored: Dataset, config: SelectConfig, strategy: Strategy,
           seconds: dict[str, float]) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """Rows of `scored` kept by the filters then the strategy (in selection order), the rows passing the filters,
    and one count record per filter; the time of each part goes to `seconds` (`filters`, `strategy`)."""
    started = time.perf_counter()
    positions, filter_steps = apply_filters(scored, config.filters)
    seconds["filters"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    candidates = scored.select(positions) if config.filters else scored
    picks = positions[np.asarray(strategy.select(candidates), dtype=np.int64)].tolist()
    seconds["strategy"] = round(time.perf_counter() - started, 3)
    return picks, positions, filter_steps


def count_scored(scored: Dataset, columns: list[str]) -> int:
    """Rows with no null in any of `columns` (all rows when the strategy reads none)."""
    present = np.ones(len(scored), dtype=bool)
    for column in columns:
        present &= pc.invert(arrow_column(scored, column).is_null()).to_numpy(zero_copy_only=False)
    return int(present.sum())
