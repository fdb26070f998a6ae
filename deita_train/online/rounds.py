"""`online/round_<k>/` on disk: what a round chose, so a run can be audited and resumed.

- `selected.json`: the chosen candidates' `id`s, in selection order;
- `scores/`: every candidate's latest online score (a `datasets` dataset: `id`, the score column, extras,
  `scored_round`), from which the next round carries the rows it does not re-score;
- `round.json`, written last (its presence marks the round done): when the round fired (`global_step`,
  `epoch`, `offset`), counts, how many rows changed since the previous round, score distributions, seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, load_from_disk
from datasets.table import InMemoryTable

from deita_train.storage import save_dataset, write_json


def round_dir(root: Path, index: int) -> Path:
    return root / f"round_{index}"


def write_round(root: Path, index: int, selected_ids: list[int], scores: pa.Table, summary: dict[str, Any]) -> None:
    """Write one round's files, `round.json` last."""
    folder = round_dir(root, index)
    save_dataset(Dataset(InMemoryTable(scores)), folder / "scores")
    write_json(folder / "selected.json", selected_ids)
    write_json(folder / "round.json", summary)


def finished_rounds(root: Path) -> list[dict[str, Any]]:
    """`round.json` of every finished round under `root`, by round index."""
    summaries = [json.loads(path.read_text()) for path in root.glob("round_*/round.json")]
    return sorted(summaries, key=lambda summary: summary["round"])


def read_selected(root: Path, index: int) -> list[int]:
    return json.loads((round_dir(root, index) / "selected.json").read_text())


def read_scores(root: Path, index: int) -> Dataset:
    return load_from_disk(str(round_dir(root, index) / "scores"))


def drop_rounds_after(root: Path, global_step: int) -> None:
    """Remove unfinished rounds and rounds fired after `global_step` (-1: all): a resumed run redoes them."""
    for folder in root.glob("round_*"):
        summary = folder / "round.json"
        if not summary.is_file() or json.loads(summary.read_text())["global_step"] > global_step:
            shutil.rmtree(folder)
