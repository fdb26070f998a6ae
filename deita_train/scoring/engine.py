"""The scoring engine: runs each recipe scorer over the pool and writes `scored/`.

Each scorer adds a column named by its recipe key (and `<key>_<extra>` inspection columns);
a record a scorer cannot score gets null there and a counted reason in the report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset

from deita_train.scoring.base import SCORERS, Score, ScorerConfig, ScoringContext
from deita_train.storage import save_dataset

BATCH_SIZE = 64


def score_pool(
    pool: Dataset, scorers: dict[str, ScorerConfig], context: ScoringContext, out_dir: Path
) -> tuple[Dataset, dict[str, Any]]:
    """Score `pool` with every scorer in recipe order; write `out_dir` and return it with per-scorer stats."""
    stats: dict[str, Any] = {}
    for column, config in scorers.items():
        scorer = SCORERS.get(config.type, f"score.{column}.type")(config, context)
        scorer.load()
        try:
            scores = [
                score
                for start in range(0, len(pool), BATCH_SIZE)
                for score in scorer.score_batch(pool.select(range(start, min(start + BATCH_SIZE, len(pool)))).to_list())
            ]
        finally:
            scorer.close()
        pool = add_score_columns(pool, column, scores)
        stats[column] = summarize(scores)
    save_dataset(pool, out_dir)
    return pool, stats


def add_score_columns(pool: Dataset, column: str, scores: list[Score]) -> Dataset:
    if column in pool.column_names:
        pool = pool.remove_columns(column)
    pool = pool.add_column(column, [score.value for score in scores])
    for extra in sorted({name for score in scores for name in score.extras}):
        name = f"{column}_{extra}"
        if name in pool.column_names:
            pool = pool.remove_columns(name)
        pool = pool.add_column(name, [score.extras.get(extra) for score in scores])
    return pool


def summarize(scores: list[Score]) -> dict[str, Any]:
    """Counts for the report: scored, truncated, and unscorable by reason."""
    reasons = Counter(score.reason for score in scores if score.reason is not None)
    return {
        "scored": sum(score.value is not None for score in scores),
        "truncated": sum(score.truncated for score in scores),
        "unscorable": dict(reasons),
    }
