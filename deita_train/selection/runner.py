"""The select stage: filters, then the strategy; writes `selected/` and `selection.json`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from datasets import Dataset

from deita_train.selection.base import STRATEGIES, SelectConfig
from deita_train.storage import save_dataset, write_json


def select(scored: Dataset, config: SelectConfig, seed: int, output_dir: Path) -> tuple[Dataset, dict[str, Any]]:
    """Apply `config` to `scored`; write `<output_dir>/selected/` and `<output_dir>/selection.json`."""
    if config.filters:
        raise NotImplementedError("select.filters are not implemented yet")
    started = time.perf_counter()
    strategy = STRATEGIES.get(config.strategy, "select.strategy")(config.options, seed)
    positions = strategy.select(scored)
    selected = scored.select(positions)
    summary = {
        **strategy.parameters(),
        "counts": {"pool": len(scored), "selected": len(selected)},
        "seconds": {"strategy": round(time.perf_counter() - started, 3)},
    }
    save_dataset(selected, output_dir / "selected")
    write_json(output_dir / "selection.json", summary)
    return selected, summary
