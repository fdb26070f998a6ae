"""The report's charts, drawn with matplotlib (file-only Agg backend) and returned as PNG bytes to embed in the page.

Every chart has a title, labelled axes and counts (not densities), so two charts of the same column read alike.
"""

from __future__ import annotations

import io

import numpy as np

WIDTH, HEIGHT = 6.4, 3.6


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a chart is drawn (not at import time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(figure)
    return buffer.getvalue()


def distribution(column: str, pool: np.ndarray, selected: np.ndarray | None, unit: str) -> bytes:
    """Counts of `column` in the pool and (on the same bins, same axis) in the selected rows; NaN left out."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(WIDTH, HEIGHT))
    pool = pool[~np.isnan(pool)]
    bins = np.histogram_bin_edges(pool, bins=40) if len(pool) else 10
    axis.hist(pool, bins=bins, color="#9aa5b1", label=f"pool (n={len(pool):,})")
    if selected is not None:
        selected = selected[~np.isnan(selected)]
        axis.hist(selected, bins=bins, color="#d9480f", alpha=0.85, label=f"selected (n={len(selected):,})")
    axis.set_title(f"{column}: pool vs selected")
    axis.set_xlabel(f"{column} ({unit})")
    axis.set_ylabel("rows")
    axis.legend()
    return png(figure)


def correlation_heatmap(names: list[str], matrix: np.ndarray) -> bytes:
    """Spearman rank correlations, with the numbers written in the cells."""
    plt = pyplot()
    size = max(3.6, 0.9 * len(names) + 1.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            value = matrix[i, j]
            axis.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                      color="white" if abs(value) > 0.6 else "black")
    axis.set_title("Spearman rank correlation between scores")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    return png(figure)


def funnel(steps: list[tuple[str, int]]) -> bytes:
    """Rows left after each step, as horizontal bars from the pool down to the selection."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(WIDTH, 0.45 * len(steps) + 1.2))
    labels = [label for label, _ in steps]
    rows = [count for _, count in steps]
    axis.barh(range(len(steps)), rows, color="#4c6ef5")
    for i, count in enumerate(rows):
        axis.text(count, i, f" {count:,}", va="center")
    axis.set_yticks(range(len(steps)), labels)
    axis.invert_yaxis()
    axis.set_xlabel("rows left")
    axis.set_title("Selection funnel")
    axis.set_xlim(0, max(rows) * 1.2 if max(rows) else 1)
    return png(figure)


def coverage(column: str, pool_xy: np.ndarray, selected_xy: np.ndarray, pool_rows: int) -> bytes:
    """A 2-D projection of the embeddings: the pool in grey, the selected rows on top."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(WIDTH, WIDTH * 0.8))
    axis.scatter(pool_xy[:, 0], pool_xy[:, 1], s=4, c="#ced4da", label=f"pool (n={pool_rows:,})")
    axis.scatter(selected_xy[:, 0], selected_xy[:, 1], s=8, c="#d9480f", label=f"selected (n={len(selected_xy):,})")
    axis.set_title(f"Coverage: PCA of {column!r}")
    axis.set_xlabel("first principal component")
    axis.set_ylabel("second principal component")
    axis.legend()
    return png(figure)


def curves(title: str, ylabel: str, series: dict[str, tuple[list[float], list[float]]]) -> bytes:
    """Lines over optimizer steps, one per named series (x, y)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(WIDTH, HEIGHT))
    for name, (x, y) in series.items():
        axis.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
    axis.set_title(title)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(ylabel)
    axis.legend()
    return png(figure)


def bars(title: str, xlabel: str, ylabel: str, labels: list[str], values: list[float]) -> bytes:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(WIDTH, HEIGHT))
    axis.bar(range(len(values)), values, color="#4c6ef5")
    axis.set_xticks(range(len(values)), labels)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    return png(figure)
