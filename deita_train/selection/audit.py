"""The audit trail, `report/audit.parquet`: one row per pool record, with its selection rank or the first reason it
was not selected, so "why is this row not in my data?" has an answer for every row.

Columns: `id`, `source_file`, `source_row` (as in the pool), `rank` (1-based selection order; null when not
selected), `reason` and `detail` (null when selected):

- `decontaminated`: the eval set, the matched n-gram (or prompt) and the overlap (or similarity);
- `filtered`: the first filter the row failed (`select.filters.<i>: <text>`);
- `not_in_mix`: the row's source (`select.mix.by`) has no share in `select.mix`;
- `unscored`: the first column the strategy reads that is null there, with the row's `<column>_reason`; or NaN;
- a strategy removal (`rejected_by_diversity`, `duplicates`, `score_cut`, `not_preselected`): the strategy's note
  (the nearest selected id and the similarity, the earlier duplicate, the failing score);
- `beyond_budget`: ranked, but the budget was filled first (no detail: `selection.json` has the budget).

Records skipped at load (`on_error: skip`) have no id; they are listed with `reason: skipped` and their problem,
so the rows add up to the records read. Every count equals the funnel's: a mismatch is a bug, raised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset

from deita_train.data.arrow_rows import arrow_table
from deita_train.selection.base import Strategy
from deita_train.selection.decontaminate import Contamination
from deita_train.selection.scores import arrow_column
from deita_train.storage import atomic_file

POOL_COLUMNS = ("id", "source_file", "source_row")


def audit_trail(scored: Dataset, picks: list[int], positions: np.ndarray, failed_at: np.ndarray,
                contamination: Contamination, filters: list[str], strategy: Strategy,
                skipped: list[dict[str, Any]]) -> pa.Table:
    """The audit table of one selection: `positions` are the rows the strategy saw, `failed_at` the first filter each
    pool row failed (-1: none), `skipped` the records skipped at load (`{path, where, problem}`)."""
    n = len(scored)
    reasons = ["decontaminated", "filtered", "unscored", *strategy.removed, "beyond_budget"]
    code = np.full(n, -1, dtype=np.int8)  # index into `reasons`; -1: none yet (selected, in the end)
    detail = np.full(n, None, dtype=object)
    code[contamination.rows] = reasons.index("decontaminated")
    detail[contamination.rows] = [f"{name}: {match!r} ({'overlap' if rule == 'ngram' else 'similarity'} {score:.3g})"
                                  for name, match, score, rule in zip(contamination.sets, contamination.matches,
                                                                      contamination.scores, contamination.rules,
                                                                      strict=True)]
    failed = np.flatnonzero(failed_at >= 0)
    code[failed] = reasons.index("filtered")
    labels = [f"select.filters.{i}: {text}" for i, text in enumerate(filters)]
    detail[failed] = [labels[i] for i in failed_at[failed]]  # one string per filter, shared by its rows
    if strategy.unranked is not None and strategy.unranked.any():
        unranked = positions[strategy.unranked]
        code[unranked] = reasons.index("unscored")
        detail[unranked] = unscored_details(scored, unranked, strategy)
    for name, removed in strategy.removed.items():
        rows = positions[removed.rows]
        code[rows] = reasons.index(name)
        detail[rows] = removed.notes
    rank = np.full(n, -1, dtype=np.int64)
    rank[np.asarray(picks, dtype=np.int64)] = np.arange(1, len(picks) + 1)
    beyond = np.zeros(n, dtype=bool)
    beyond[positions] = True
    code[beyond & (code < 0) & (rank < 0)] = reasons.index("beyond_budget")
    code[rank > 0] = -1
    detail[rank > 0] = None
    pool = arrow_table(scored, set(POOL_COLUMNS) & set(scored.column_names))
    table = pa.table({
        "id": pool.column("id").combine_chunks().cast(pa.int64()),
        "source_file": pool.column("source_file").combine_chunks() if "source_file" in pool.column_names else
        pa.nulls(n, pa.string()),
        "source_row": pool.column("source_row").combine_chunks().cast(pa.int64()) if "source_row" in
        pool.column_names else pa.nulls(n, pa.int64()),
        "rank": pa.array(rank, mask=rank < 0),
        "reason": pa.DictionaryArray.from_arrays(pa.array(code, mask=code < 0), pa.array(reasons)),
        "detail": pa.array(detail, pa.string()),
    })
    return pa.concat_tables([table, skipped_rows(skipped)])


def unscored_details(scored: Dataset, rows: np.ndarray, strategy: Strategy) -> list[str]:
    """Why the strategy could not rank each of `rows`: the first column it reads that is null there (with the row's
    `<column>_reason` where the pool has one), else the score was NaN."""
    subset = scored.select(rows)
    out = np.full(len(rows), None, dtype=object)
    for column in strategy.columns():
        null = (out == None) & arrow_column(subset, column).is_null().to_numpy(zero_copy_only=False)  # noqa: E711
        if not null.any():
            continue
        reasons = (arrow_column(subset, f"{column}_reason").to_pylist() if f"{column}_reason" in subset.column_names
                   else [None] * len(rows))
        out[null] = [f"{column}: {reasons[i] or 'null'}" for i in np.flatnonzero(null)]
    score = strategy.config.expressions().get("score", "score")
    out[out == None] = f"{score}: NaN"  # noqa: E711
    return out.tolist()


def skipped_rows(skipped: list[dict[str, Any]]) -> pa.Table:
    """Records skipped at load: no id, rank or row number; the source, and where and what the problem was."""
    return pa.table({
        "id": pa.nulls(len(skipped), pa.int64()),
        "source_file": pa.array([item["path"] for item in skipped], pa.string()),
        "source_row": pa.nulls(len(skipped), pa.int64()),
        "rank": pa.nulls(len(skipped), pa.int64()),
        "reason": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(skipped), np.int8)), pa.array(["skipped"])),
        "detail": pa.array([f"{item['where']}: {item['problem']}" for item in skipped], pa.string()),
    })


def check_against_funnel(audit: pa.Table, funnel: dict[str, Any], skipped: int) -> None:
    """Each reason's count must equal the funnel's; anything else is a bug in the audit or the funnel."""
    reasons = audit.column("reason").combine_chunks()
    counts = {item["values"]: item["counts"] for item in pc.value_counts(reasons).to_pylist() if item["values"]}
    counts["selected"] = reasons.null_count
    expected = {"selected": funnel["selected"], "filtered": funnel["filtered"]["rows"],
                "unscored": funnel["unscored"]["rows"], "beyond_budget": funnel["beyond_budget"], "skipped": skipped}
    if "decontaminated" in funnel:
        expected["decontaminated"] = funnel["decontaminated"]["rows"]
    fixed = {"pool", "decontaminated", "filtered", "unscored", "beyond_budget", "selected", "budget", "shortfall",
             "mix"}
    expected |= {name: value for name, value in funnel.items() if name not in fixed}
    expected = {name: count for name, count in expected.items() if count}
    if {name: int(count) for name, count in counts.items()} != expected:
        raise RuntimeError(f"select: the audit trail counts {counts} differ from the funnel's {expected}")


def write_audit(audit: pa.Table, path) -> None:
    with atomic_file(path, binary=True) as handle:
        pq.write_table(audit, handle)
