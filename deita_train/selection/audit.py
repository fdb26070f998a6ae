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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset

from deita_train.data.arrow_rows import parts
from deita_train.selection.base import Strategy
from deita_train.selection.decontaminate import Contamination
from deita_train.selection.scores import arrow_column
from deita_train.storage import atomic_file

POOL_COLUMNS = ("id", "source_file", "source_row")
SCHEMA = pa.schema([("id", pa.int64()), ("source_file", pa.string()), ("source_row", pa.int64()),
                   ("rank", pa.int64()), ("reason", pa.dictionary(pa.int8(), pa.string())), ("detail", pa.string())])


@dataclass
class Selection:
    """What one selection did to the pool, as the audit reads it: `picks` (pool rows, in selection order),
    `positions` (the rows the strategy saw, ascending), `failed_at` (per pool row, the first filter it failed; -1:
    none), the decontamination, the filters' texts and the strategy after its run."""

    picks: list[int]
    positions: np.ndarray
    failed_at: np.ndarray
    contamination: Contamination
    filters: list[str]
    strategy: Strategy


def write_audit(path: Path, scored: Dataset, selection: Selection, skipped: list[dict[str, Any]],
                funnel: dict[str, Any]) -> None:
    """Write the audit table of `selection` over `scored` to `path`, a part of the pool at a time (one row group
    each), then the records skipped at load (`{path, where, problem}`). Its counts are checked against `funnel`
    before the file is moved into place: a mismatch (a bug) leaves no audit behind."""
    strategy = selection.strategy
    reasons = ["decontaminated", "filtered", "unscored", *strategy.removed, "beyond_budget", "skipped"]
    picks = np.asarray(selection.picks, dtype=np.int64)
    order = np.argsort(picks, kind="stable")
    ranks = Ranks(picks[order], order + 1)
    counts = np.zeros(len(reasons) + 1, dtype=np.int64)  # the last: selected
    with atomic_file(path, binary=True) as handle, pq.ParquetWriter(handle, SCHEMA) as writer:
        for start, pool in parts(scored, set(POOL_COLUMNS)):
            code, detail, rank = part_reasons(scored, selection, reasons, ranks, start, pool.num_rows)
            counts += np.bincount(code + 1, minlength=len(reasons) + 1)[[*range(1, len(reasons) + 1), 0]]
            writer.write_table(pa.table({
                "id": pool.column("id").cast(pa.int64()),
                "source_file": pool.column("source_file") if "source_file" in pool.column_names else
                pa.nulls(pool.num_rows, pa.string()),
                "source_row": pool.column("source_row").cast(pa.int64()) if "source_row" in pool.column_names else
                pa.nulls(pool.num_rows, pa.int64()),
                "rank": pa.array(rank, mask=rank < 0),
                "reason": pa.DictionaryArray.from_arrays(pa.array(code, mask=code < 0), pa.array(reasons)),
                "detail": pa.array(detail, pa.string()),
            }, schema=SCHEMA))
        writer.write_table(skipped_rows(skipped, reasons))
        counts[reasons.index("skipped")] = len(skipped)
        check_against_funnel(dict(zip([*reasons, "selected"], counts.tolist(), strict=True)), funnel, len(skipped))


class Ranks(NamedTuple):
    """The picked pool rows, ascending, and each one's 1-based rank."""

    rows: np.ndarray
    ranks: np.ndarray


def part_reasons(scored: Dataset, selection: Selection, reasons: list[str], ranks: Ranks, start: int,
                 rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pool rows `start` .. `start + rows`: the index of each row's reason in `reasons` (-1: selected), its
    detail (None: selected) and its rank (-1: not selected)."""
    stop = start + rows
    code = np.full(rows, -1, dtype=np.int8)
    detail = np.full(rows, None, dtype=object)
    contamination = selection.contamination
    low, high = np.searchsorted(contamination.rows, [start, stop])
    here = contamination.rows[low:high] - start
    code[here] = reasons.index("decontaminated")
    detail[here] = [f"{name}: {match!r} ({'overlap' if rule == 'ngram' else 'similarity'} {score:.3g})"
                    for name, match, score, rule in zip(contamination.sets[low:high], contamination.matches[low:high],
                                                        contamination.scores[low:high], contamination.rules[low:high],
                                                        strict=True)]
    failed_at = selection.failed_at[start:stop]
    failed = np.flatnonzero(failed_at >= 0)
    code[failed] = reasons.index("filtered")
    labels = np.array([f"select.filters.{i}: {text}" for i, text in enumerate(selection.filters)], dtype=object)
    detail[failed] = labels[failed_at[failed]]  # one string per filter, shared by its rows
    low, high = np.searchsorted(selection.positions, [start, stop])  # the strategy's input rows in this part
    strategy = selection.strategy
    if strategy.unranked is not None and strategy.unranked[low:high].any():
        unranked = selection.positions[low:high][strategy.unranked[low:high]]
        code[unranked - start] = reasons.index("unscored")
        detail[unranked - start] = unscored_details(scored, unranked, strategy)
    for name, removed in strategy.removed.items():
        first, last = np.searchsorted(removed.rows, [low, high])
        here = selection.positions[removed.rows[first:last]] - start
        code[here] = reasons.index(name)
        detail[here] = removed.notes[first:last]
    rank = np.full(rows, -1, dtype=np.int64)
    first, last = np.searchsorted(ranks.rows, [start, stop])
    rank[ranks.rows[first:last] - start] = ranks.ranks[first:last]
    seen = np.zeros(rows, dtype=bool)
    seen[selection.positions[low:high] - start] = True
    code[seen & (code < 0) & (rank < 0)] = reasons.index("beyond_budget")
    code[rank > 0] = -1
    detail[rank > 0] = None
    return code, detail, rank


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


def skipped_rows(skipped: list[dict[str, Any]], reasons: list[str]) -> pa.Table:
    """Records skipped at load: no id, rank or row number; the source, and where and what the problem was."""
    code = np.full(len(skipped), reasons.index("skipped"), dtype=np.int8)
    return pa.table({
        "id": pa.nulls(len(skipped), pa.int64()),
        "source_file": pa.array([item["path"] for item in skipped], pa.string()),
        "source_row": pa.nulls(len(skipped), pa.int64()),
        "rank": pa.nulls(len(skipped), pa.int64()),
        "reason": pa.DictionaryArray.from_arrays(pa.array(code), pa.array(reasons)),
        "detail": pa.array([f"{item['where']}: {item['problem']}" for item in skipped], pa.string()),
    }, schema=SCHEMA)


def audit_counts(audit: pa.Table) -> dict[str, int]:
    """The rows of an audit table per reason, with those selected under `selected`."""
    reasons = audit.column("reason").combine_chunks()
    counts = {item["values"]: item["counts"] for item in pc.value_counts(reasons).to_pylist() if item["values"]}
    return counts | {"selected": reasons.null_count}


def check_against_funnel(counts: dict[str, int], funnel: dict[str, Any], skipped: int) -> None:
    """Each reason's count (`write_audit`'s, or `audit_counts`) must equal the funnel's; anything else is a bug in
    the audit or the funnel."""
    expected = {"selected": funnel["selected"], "filtered": funnel["filtered"]["rows"],
                "unscored": funnel["unscored"]["rows"], "beyond_budget": funnel["beyond_budget"], "skipped": skipped}
    if "decontaminated" in funnel:
        expected["decontaminated"] = funnel["decontaminated"]["rows"]
    fixed = {"pool", "decontaminated", "filtered", "unscored", "beyond_budget", "selected", "budget", "shortfall",
             "mix"}
    expected |= {name: value for name, value in funnel.items() if name not in fixed}
    expected = {name: count for name, count in expected.items() if count}
    found = {name: int(count) for name, count in counts.items() if count}
    if found != expected:
        raise RuntimeError(f"select: the audit trail counts {found} differ from the funnel's {expected}")
