"""`report/` after selection: score histograms (pool vs selected) and a 2-D PCA map of the embeddings.

Numeric columns are plotted as they are; per-turn score lists as their per-sample sum (as strategies
rank them). A list-of-float column is an embedding when every non-null row has the same length and
that length is at least `EMBEDDING_MIN_SIZE`; it gets a PCA map instead of a histogram.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset

from deita_train.selection.scores import arrow_column, embedding_matrix

EMBEDDING_MIN_SIZE = 16
PCA_SAMPLE = 20000  # pool rows (and selected rows) drawn for the PCA map


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a report is drawn (not at import time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(pool: Dataset, positions: list[int], report_dir: Path, seed: int) -> list[str]:
    """Write the PNGs for `pool` with the rows at `positions` selected; returns the file names written."""
    report_dir.mkdir(parents=True, exist_ok=True)
    written = []
    chosen = np.asarray(positions, dtype=np.int64)
    for column in numeric_columns(pool):
        array = arrow_column(pool, column)
        kind = column_kind(array)
        if kind == "score":
            values = per_sample(array)
            written.append(histogram(column, values, values[chosen], report_dir))
        elif kind == "embedding":
            vectors, valid = embedding_matrix(pool, column)
            if len(vectors) >= 3:  # a 2-D projection needs at least 3 points
                written.append(pca_map(column, vectors, valid, chosen, report_dir, seed))
    return written


def numeric_columns(pool: Dataset) -> list[str]:
    """Columns of numbers or lists of numbers (`id` aside), from the schema: text columns are never read."""
    return [field.name for field in pool.data.schema if field.name != "id" and numeric(field.type)]


def numeric(kind: pa.DataType) -> bool:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def column_kind(array: pa.Array) -> str | None:
    """`score` (numeric, or list of numbers of varying length), `embedding`, or None (not plotted)."""
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "score"
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) and (
        pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
    ):
        lengths = pc.list_value_length(array.drop_null()).to_numpy(zero_copy_only=False)
        if len(lengths) and lengths.min() == lengths.max() and lengths.min() >= EMBEDDING_MIN_SIZE:
            return "embedding"
        return "score"
    return None


def per_sample(array: pa.Array) -> np.ndarray:
    """float64 per row: the value, or the sum of a per-turn list; NaN for null."""
    if not pa.types.is_nested(array.type):
        return array.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(array).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    sums = np.zeros(len(array), dtype=np.float64)
    filled = lengths > 0
    if filled.any():  # consecutive non-empty rows tile `flat`, so each sum runs to the next one's start
        sums[filled] = np.add.reduceat(flat, starts[filled])
    sums[array.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return sums


def histogram(column: str, pool: np.ndarray, selected: np.ndarray, report_dir: Path) -> str:
    pool, selected = pool[~np.isnan(pool)], selected[~np.isnan(selected)]
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    if len(pool):
        bins = np.histogram_bin_edges(pool, bins=40)
        axis.hist(pool, bins=bins, density=True, alpha=0.5, label=f"pool (n={len(pool)})")
        axis.hist(selected, bins=bins, density=True, alpha=0.5, label=f"selected (n={len(selected)})")
    axis.set_xlabel(column)
    axis.set_ylabel("density")
    axis.legend()
    name = f"hist_{column}.png"
    figure.savefig(report_dir / name, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return name


def pca_map(
    column: str, vectors: np.ndarray, valid: np.ndarray, chosen: np.ndarray, report_dir: Path, seed: int
) -> str:
    position = np.cumsum(valid) - 1
    rng = np.random.default_rng(seed)
    background = rng.choice(len(vectors), size=min(len(vectors), PCA_SAMPLE), replace=False)
    marked = position[chosen[valid[chosen]]]
    marked = marked[rng.choice(len(marked), size=min(len(marked), PCA_SAMPLE), replace=False)]
    data = torch.from_numpy(vectors[background])
    mean = data.mean(0)
    _, _, basis = torch.pca_lowrank(data - mean, q=2, center=False, niter=4)
    project = lambda rows: ((torch.from_numpy(vectors[rows]) - mean) @ basis).numpy()  # noqa: E731
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 6))
    pool_xy, chosen_xy = project(background), project(marked)
    axis.scatter(pool_xy[:, 0], pool_xy[:, 1], s=3, c="lightgray", label=f"pool (n={len(vectors)})")
    axis.scatter(chosen_xy[:, 0], chosen_xy[:, 1], s=6, c="tab:red", label=f"selected (n={len(chosen)})")
    axis.set_title(f"PCA of {column!r}")
    axis.legend()
    name = f"pca_{column}.png"
    figure.savefig(report_dir / name, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return name
