"""What a run left under its `output_dir`, read for the report: each part is None (or empty) when its stage did not
run, so the report covers any subset of stages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, load_from_disk

from deita_train.errors import UserError

AUDIT = "audit.parquet"


class NotAnOutputDir(UserError):
    """The folder holds nothing a deita-train run writes."""


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_dataset(path: Path) -> Dataset | None:
    return load_from_disk(str(path)) if (path / "state.json").is_file() else None


@dataclass
class RunOutputs:
    """A run's outputs on disk."""

    out: Path
    run: dict[str, Any] = field(default_factory=dict)  # report/run.json
    selection: dict[str, Any] | None = None  # selection.json
    synth: dict[str, Any] | None = None  # synth/summary.json
    scored: Dataset | None = None  # scored/ (memory-mapped)
    selected: Dataset | None = None  # selected/ (memory-mapped)
    trainer_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # sft/dpo -> trainer_state.json
    rounds: list[dict[str, Any]] = field(default_factory=list)  # online/round_<k>/round.json, by round
    audit: Path | None = None  # report/audit.parquet (read in batches: one row per pool record)

    @classmethod
    def read(cls, out: Path) -> RunOutputs:
        if not out.is_dir():
            raise NotAnOutputDir(f"{out}: no such folder; give the output_dir of a run")
        found = cls(
            out=out,
            run=read_json(out / "report" / "run.json") or {},
            selection=read_json(out / "selection.json"),
            synth=read_json(out / "synth" / "summary.json"),
            scored=read_dataset(out / "scored"),
            selected=read_dataset(out / "selected"),
            trainer_states={stage: state for stage in ("sft", "dpo")
                            if (state := read_json(out / stage / "trainer_state.json")) is not None},
            rounds=sorted((read_json(path) for path in (out / "online").glob("round_*/round.json")),
                          key=lambda summary: summary["round"]),
            audit=out / "report" / AUDIT if (out / "report" / AUDIT).is_file() else None,
        )
        if not (found.run or found.selection or found.synth or found.scored is not None or found.trainer_states):
            raise NotAnOutputDir(f"{out}: holds no output of a deita-train run (no report/run.json, selection.json, "
                                 "scored/, synth/ or trainer state); give the recipe's output_dir")
        return found

    def rejected(self, rows: int = 10_000) -> list[dict[str, Any]]:
        """The first `rows` audited pool rows that were not selected (records skipped at load left out), read batch
        by batch: a 10M-row audit is never held whole."""
        found: list[dict[str, Any]] = []
        for batch in pq.ParquetFile(self.audit).iter_batches(batch_size=rows, columns=["id", "reason", "detail",
                                                                                       "rank"]):
            keep = pc.and_(pc.is_valid(batch.column("id")), pc.is_null(batch.column("rank")))
            found += pa.Table.from_batches([batch]).filter(keep).to_pylist()
            if len(found) >= rows:
                break
        return found[:rows]

    def selected_ids(self) -> np.ndarray | None:
        """Pool ids of the selected rows, in selection order."""
        if self.selected is None or "id" not in self.selected.column_names:
            return None
        return self.selected.data.column("id").to_numpy()

    def score_types(self) -> dict[str, str]:
        """Scorer type of each score column the recipe declared (`score:`), from the recorded recipe."""
        score = (self.run.get("recipe") or {}).get("score") or {}
        return {column: spec.get("type", "?") for column, spec in score.items() if isinstance(spec, dict)}
