"""`score_logger`: at train start, the selection's score distributions, pool against selected.

For every score column (`callbacks.scores`): histograms of the pool and of the selected rows
(`selection/pool/<column>`, `selection/selected/<column>`), counts (`selection/count/...`), the numeric
parameters of `selection.json` (`selection/param/<name>`, e.g. `budget`, `threshold`), to every active
`report_to` backend, and one PNG per column under `<output_dir>/report/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from deita_train.callbacks.backends import ReportWriter
from deita_train.callbacks.base import CallbackConfig, RecipeCallback, register_callback
from deita_train.callbacks.scores import row_scores, score_columns
from transformers import TrainerControl, TrainerState, TrainingArguments


@dataclass
class ScoreLoggerConfig(CallbackConfig):
    """Options of `score_logger`."""

    columns: list[str] | None = field(
        default=None, metadata={"help": "Score columns to log; None logs every score column of the pool."}
    )
    bins: int = field(default=50, metadata={"help": "Histogram bins of the PNGs."})


@register_callback("score_logger")
class ScoreLoggerCallback(RecipeCallback):
    """Logs the score distributions of the pool and the selection once, at train start, on the main process.

    Needs `context.pool`, `context.selected` and `context.selection_path`.
    """

    config_class = ScoreLoggerConfig

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if not state.is_world_process_zero:
            return
        pool, selected = self.context.pool, self.context.selected
        if pool is None or selected is None or self.context.selection_path is None:
            raise ValueError("score_logger needs the scored pool, the selected rows and selection.json; "
                             "add it only to runs with a select stage (CallbackContext.pool/selected/selection_path)")
        columns = self.config.columns if self.config.columns is not None else score_columns(pool)
        missing = [c for c in columns if c not in pool.column_names or c not in selected.column_names]
        if missing:
            raise ValueError(f"score_logger.columns: {missing} not in both the pool ({pool.column_names}) and the "
                             f"selected rows ({selected.column_names}); name score columns the recipe scored")
        selection = json.loads(Path(self.context.selection_path).read_text(encoding="utf-8"))
        pool_scores, selected_scores = row_scores(pool, columns), row_scores(selected, columns)
        writer = ReportWriter(args)
        step = state.global_step
        scalars = {f"selection/count/{k}": float(v) for k, v in selection.get("counts", {}).items()}
        scalars |= {f"selection/param/{k}": float(v) for k, v in selection.items() if is_number(v)}
        for column in columns:
            for part, values in (("pool", pool_scores[column]), ("selected", selected_scores[column])):
                finite = values[np.isfinite(values)]
                scalars[f"selection/{part}/{column}_scored"] = float(len(finite))
                scalars[f"selection/{part}/{column}_unscored"] = float(len(values) - len(finite))
                if len(finite):
                    scalars[f"selection/{part}/{column}_mean"] = float(finite.mean())
                    writer.histogram(f"selection/{part}/{column}", finite, step)
        writer.scalars(scalars, step)
        writer.close()
        report = Path(self.context.output_dir) / "report"
        for column in columns:
            plot_column(column, pool_scores[column], selected_scores[column], selection, self.config.bins,
                        report / f"scores_{column}.png")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_column(column: str, pool: np.ndarray, selected: np.ndarray, selection: dict, bins: int, path: Path) -> None:
    """Pool and selected histograms of one column on shared bins; the strategy's threshold as a line when it
    thresholds this column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pool, selected = pool[np.isfinite(pool)], selected[np.isfinite(selected)]
    figure, axes = plt.subplots(figsize=(7, 4))
    if len(pool):
        edges = np.histogram_bin_edges(pool, bins=bins)
        axes.hist(pool, bins=edges, alpha=0.5, label=f"pool (n={len(pool)})")
        axes.hist(selected, bins=edges, alpha=0.7, label=f"selected (n={len(selected)})")
    if is_number(selection.get("threshold")) and selection.get("score") == column:
        axes.axvline(selection["threshold"], color="black", linestyle="--", label=f"threshold {selection['threshold']}")
    axes.set_xlabel(f"{column} (per sample)")
    axes.set_ylabel("rows")
    axes.set_title(f"{column}: pool vs selected ({selection['strategy']})")
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
