"""The select stage: decontamination, filters, then the strategy; writes `selected/`, `selection.json` and
`report/audit.parquet` (every pool row's rank or first reason not to be selected: audit.py).

`selection.json` records the strategy and its parameters, counts at each step (`pool`; `scored`: rows
with no null in the columns the strategy reads; one entry per filter; `filtered`: rows left after
decontamination and the filters; `selected`), what the strategy found, the funnel,
seconds per step (and their total), and with `select.decontaminate`, `decontamination` (`Contamination.summary`:
the rows each eval set matched, and the first 20 matches: row id, set, the matched n-gram).

The funnel accounts for every pool row once, in the order the steps remove them:

    pool = decontaminated + filtered + not_in_mix + unscored + (the strategy's removals) + beyond_budget + selected

- `decontaminated`: rows whose user turns overlap an eval set's prompts (`select.decontaminate`; see
  decontaminate.py), by set; present only when `select.decontaminate` is set (else 0);
- `filtered`: rows removed by `select.filters`, each by the first filter it fails (`null`: by a null there);
- `not_in_mix`: with `select.mix`, rows of a source without a share (mix.py); present only then;
- `unscored`: rows past the filters that the strategy cannot rank (a null or NaN where it reads), by column
  and reason: a row's `<column>_reason` where the dataset has that column, else `null`;
- the strategy's removals (`Strategy.removals`): `rejected_by_diversity` (deita: reached in score order,
  too similar to a selected row), `duplicates` (dedup), `score_cut` (threshold, superfilter, cherry,
  facility_location: ranked rows failing the cut), `not_preselected` (facility_location);
- `beyond_budget`: rows past every step left out because the budget was filled (0 when it was not);
- `selected`; and `budget` (the rows aimed for; a `fraction` resolved to a count);
- `mix` (with `select.mix`): per source its share, candidates, budget, rows received from short sources,
  selected and shortfall; `redistributed`; the rows without a share by source (`MixedStrategy.record`).
  Unscored rows and the strategy's removals are summed over the sources.
When fewer rows than the budget are selected, `shortfall` = budget - selected and a warning names the causes.
Each step is logged on one INFO line. No row selected is a `UserError` naming the step that emptied the
selection, raised before anything is written (an earlier run's `selected/` stays, but its manifest is gone, so
no later stage reads it: see manifest.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from deita_train.data.arrow_rows import arrow_table, parts, rows_view, take_rows
from deita_train.data.progress import WATCHED_ROWS
from deita_train.errors import UserError
from deita_train.selection.audit import Selection, write_audit
from deita_train.selection.base import Strategy
from deita_train.selection.config import SelectConfig
from deita_train.selection.decontaminate import Contamination, find_contamination
from deita_train.selection.filters import apply_filters
from deita_train.selection.mix import MixedStrategy, build_strategy
from deita_train.selection.scores import arrow_column
from deita_train.storage import save_dataset, write_json

logger = logging.getLogger(__name__)

HINTS = {
    "decontaminated": "every row overlaps an eval set: check select.decontaminate (sets, ngram, min_overlap)",
    "unscored": "check the score columns (`<column>_reason` in scored/ says why a row has no score)",
    "score_cut": "no scored row passes the cut: check the scores",
    "not_preselected": "raise select.preselect",
    "not_in_mix": "no candidate's source has a share: check select.mix.by and the keys of select.mix.shares",
    "beyond_budget": "the budget is 0 rows: raise select.budget or select.fraction",
}


class Step(NamedTuple):
    """One funnel step as the console and messages show it."""

    kind: str  # `decontaminated`, a filter's key (`select.filters.0`), `unscored`, a strategy removal, `beyond_budget`
    label: str  # e.g. "select.filters.0 'length < 2048' removed 12 (3 null)"
    removed: int
    left: int  # rows left after this step


def select(scored: Dataset, config: SelectConfig, seed: int, output_dir: Path,
           skipped: list[dict[str, Any]] = ()) -> tuple[Dataset, dict[str, Any]]:
    """Apply `config` to `scored`; write `<output_dir>/selected/`, `selection.json` and `report/audit.parquet`
    (`skipped`: the records skipped at load, `{path, where, problem}`, listed in the audit).

    Raises `UserError` when no row is selected, before writing anything (see the module docstring)."""
    seconds: dict[str, float] = {}
    strategy = build_strategy(config, seed)
    contamination = decontaminated(scored, config, seconds)
    choice = choose(scored, config, strategy, seconds, contamination.rows)
    picks, positions, filter_steps = choice.picks, choice.positions, choice.filter_steps
    funnel = build_funnel(scored, positions, filter_steps, strategy, len(picks), contamination)
    steps = funnel_steps(funnel, strategy)
    log_funnel(funnel, steps)
    if not picks:
        raise UserError(empty_message(funnel, steps))

    with timed_pass(seconds, "audit", len(scored)):
        trail = Selection(picks, positions, choice.failed_at, contamination, config.filters, strategy)
        write_audit(output_dir / "report" / "audit.parquet", scored, trail, list(skipped), funnel)

    with timed_pass(seconds, "write", len(picks)):
        selected = taken(scored, picks)
        save_dataset(selected, output_dir / "selected")
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
        "funnel": funnel,
        "found": strategy.details(),
        "seconds": seconds,
    }
    if config.decontaminate is not None:
        summary["decontamination"] = contamination.summary(scored, config.decontaminate)
    write_json(output_dir / "selection.json", summary)
    return selected, summary


@contextmanager
def timed_pass(seconds: dict[str, float], name: str, rows: int) -> Iterator[None]:
    """One pass of the selection over `rows`: its seconds go to `seconds[name]`, and a pool worth watching shows a
    bar with its rows/s, filled when the pass ends."""
    started = time.perf_counter()
    with tqdm(total=rows, desc=f"select: {name}", unit=" rows", disable=rows < WATCHED_ROWS) as bar:
        yield
        bar.update(rows)
    seconds[name] = round(time.perf_counter() - started, 3)


def taken(scored: Dataset, picks: list[int]) -> Dataset:
    """The picked rows, copied into memory chunk by chunk (`take_rows`). Saving `scored.select(picks)` as it is would
    first size the whole memory-mapped pool (datasets' `_estimate_nbytes`), paging in every column."""
    table = take_rows(arrow_table(scored, set(scored.column_names)), np.asarray(picks, dtype=np.int64))
    return Dataset(InMemoryTable(table), info=scored.info)


def decontaminated(scored: Dataset, config: SelectConfig, seconds: dict[str, float]) -> Contamination:
    """The rows `config.decontaminate` finds contaminated (none when it is not set); its time goes to `seconds`."""
    if config.decontaminate is None:
        return Contamination()
    with timed_pass(seconds, "decontaminate", len(scored)):
        return find_contamination(scored, config.decontaminate)


class Choice(NamedTuple):
    """What `choose` found."""

    picks: list[int]  # rows of `scored`, in selection order
    positions: np.ndarray  # rows passing decontamination and the filters: the strategy's input
    filter_steps: list[dict[str, Any]]  # one count record per filter
    failed_at: np.ndarray  # per row of `scored`, the first filter it failed (-1: none, or not filtered)


def choose(scored: Dataset, config: SelectConfig, strategy: Strategy, seconds: dict[str, float],
           excluded: np.ndarray | None = None) -> Choice:
    """The filters then the strategy over `scored`; the rows at `excluded` (the decontaminated rows) are left out
    before the filters. The time of each part goes to `seconds` (`filters`, `strategy`)."""
    with timed_pass(seconds, "filters", len(scored)):
        active = None
        if excluded is not None and len(excluded):
            active = np.ones(len(scored), dtype=bool)
            active[excluded] = False
        positions, filter_steps, failed_at = apply_filters(scored, config.filters, active=active)

    with timed_pass(seconds, "strategy", len(positions)):
        candidates = scored if len(positions) == len(scored) else rows_view(scored, positions)
        picks = positions[np.asarray(strategy.select(candidates), dtype=np.int64)].tolist()
    return Choice(picks, positions, filter_steps, failed_at)


def count_scored(scored: Dataset, columns: list[str]) -> int:
    """Rows with no null in any of `columns` (all rows when the strategy reads none; the strategy has read each of
    them, so they exist), counted a part of the pool at a time."""
    if not columns:
        return len(scored)
    present = 0
    for _, table in parts(scored, set(columns)):
        null = np.zeros(table.num_rows, dtype=bool)
        for column in columns:
            null |= table.column(column).is_null().to_numpy(zero_copy_only=False)
        present += int(table.num_rows - null.sum())
    return present


def build_funnel(scored: Dataset, positions: np.ndarray, filter_steps: list[dict[str, Any]], strategy: Strategy,
                 selected: int, contamination: Contamination) -> dict[str, Any]:
    """The funnel (module docstring) of `strategy`, run on the rows at `positions` (those left after `contamination`
    and the filters), having selected `selected`.

    A strategy whose counts cannot add up (a negative remainder, rows left beyond a budget it did not fill) is a
    bug: a RuntimeError, never a wrong funnel."""
    unranked = np.zeros(len(positions), dtype=bool) if strategy.unranked is None else strategy.unranked
    removed = {name: int(strategy.details()[name]) for name in strategy.removals}
    beyond = len(positions) - int(unranked.sum()) - sum(removed.values()) - selected
    if len(unranked) != len(positions) or beyond < 0 or (beyond and selected != strategy.budget):
        raise RuntimeError(f"select: the counts of strategy {strategy.name!r} do not add up: {len(positions)} rows in, "
                           f"{len(unranked)} flags, {int(unranked.sum())} unranked, removed {removed}, {selected} "
                           f"selected, budget {strategy.budget}")
    funnel: dict[str, Any] = {"pool": len(scored)}
    if contamination.prompts:  # select.decontaminate is set
        funnel["decontaminated"] = {"rows": len(contamination.rows), "by_set": contamination.by_set()}
    funnel["filtered"] = {"rows": len(scored) - len(contamination.rows) - len(positions),
                          "by_filter": [{"key": f"select.filters.{i}", "filter": step["filter"],
                                         "removed": step["failed"] + step["null"], "null": step["null"]}
                                        for i, step in enumerate(filter_steps)]}
    if "not_in_mix" in removed:  # select.mix is set: removed before the strategy ranks
        funnel["not_in_mix"] = removed.pop("not_in_mix")
    funnel |= {
        "unscored": {"rows": int(unranked.sum()),
                     "by_column": unscored_reasons(scored, positions[unranked], strategy)},
        **removed,
        "beyond_budget": beyond,
        "selected": selected,
        "budget": strategy.budget,
    }
    if strategy.budget is not None and selected < strategy.budget:
        funnel["shortfall"] = strategy.budget - selected
    if isinstance(strategy, MixedStrategy):
        funnel["mix"] = strategy.record()
    return funnel


def unscored_reasons(scored: Dataset, rows: np.ndarray, strategy: Strategy) -> dict[str, dict[str, int]]:
    """Why the strategy could not rank `rows` (of `scored`): each row counted once, under the first column it reads
    that is null there, by that row's `<column>_reason` (`null` where there is none); a row with no null (its
    score is NaN) under the score expression, as `NaN`."""
    if not len(rows):
        return {}
    unranked = scored.select(rows)
    left = np.ones(len(rows), dtype=bool)
    found: dict[str, dict[str, int]] = {}
    for column in strategy.columns():
        null = left & arrow_column(unranked, column).is_null().to_numpy(zero_copy_only=False)
        if null.any():
            found[column] = null_reasons(unranked, column, null)
        left &= ~null
    if left.any():
        found[strategy.config.expressions().get("score", "score")] = {"NaN": int(left.sum())}
    return found


def null_reasons(rows: Dataset, column: str, null: np.ndarray) -> dict[str, int]:
    """Rows flagged in `null` by their `<column>_reason` (`null` where `rows` has no such column or no reason there),
    most frequent first."""
    if f"{column}_reason" not in rows.column_names:
        return {"null": int(null.sum())}
    reasons = arrow_column(rows, f"{column}_reason").filter(pa.array(null)).cast(pa.string()).fill_null("null")
    counts = [(item["values"], item["counts"]) for item in pc.value_counts(reasons).to_pylist()]
    return dict(sorted(counts, key=lambda item: (-item[1], item[0])))


def funnel_steps(funnel: dict[str, Any], strategy: Strategy) -> list[Step]:
    """The funnel's steps in order, each with the rows it removed and the rows left after it."""
    rows: list[tuple[str, str, int]] = []
    if "decontaminated" in funnel:
        step = funnel["decontaminated"]
        sets = ", ".join(f"{name} {n}" for name, n in step["by_set"].items())
        rows.append(("decontaminated", f"decontaminated {step['rows']} ({sets})", step["rows"]))
    for record in funnel["filtered"]["by_filter"]:
        null = f" ({record['null']} null)" if record["null"] else ""
        rows.append((record["key"], f"{record['key']} {record['filter']!r} removed {record['removed']}{null}",
                     record["removed"]))
    if "not_in_mix" in funnel:
        rows.append(("not_in_mix", f"not in mix {funnel['not_in_mix']}", funnel["not_in_mix"]))
    unscored = funnel["unscored"]
    reasons = "; ".join(f"{column}: " + ", ".join(f"{reason} {n}" for reason, n in counts.items())
                        for column, counts in unscored["by_column"].items())
    rows.append(("unscored", f"unscored {unscored['rows']}" + (f" ({reasons})" if reasons else ""), unscored["rows"]))
    for name in (name for name in strategy.removals if name != "not_in_mix"):
        cut = strategy.details().get("cut") if name == "score_cut" else None
        rows.append((name, f"{name.replace('_', ' ')} {funnel[name]}" + (f" (keeps {cut})" if cut else ""),
                     funnel[name]))
    rows.append(("beyond_budget", f"beyond budget {funnel['beyond_budget']}", funnel["beyond_budget"]))
    steps, left = [], funnel["pool"]
    for kind, label, removed in rows:
        left -= removed
        steps.append(Step(kind, label, removed, left))
    return steps


def log_funnel(funnel: dict[str, Any], steps: list[Step]) -> None:
    """One INFO line per step, then a WARNING when the budget was not reached (an empty selection raises instead)."""
    logger.info("select: pool %d rows", funnel["pool"])
    for step in steps:
        logger.info("select: %s, %d left", step.label, step.left)
    budget = funnel["budget"]
    logger.info("select: selected %d%s", funnel["selected"], "" if budget is None else f" of budget {budget}")
    if "shortfall" in funnel and funnel["selected"]:
        causes = "; ".join(step.label for step in steps if step.removed) or f"the pool has {funnel['pool']} rows"
        logger.warning("select: budget not reached: selected %d of %d (%s)", funnel["selected"], budget, causes)


def empty_message(funnel: dict[str, Any], steps: list[Step]) -> str:
    """What emptied the selection: every step that removed rows, then how to fix the one that left none."""
    emptied = next((step for step in steps if step.removed and step.left == 0), None)
    if emptied is None:
        return "select: no row selected: the pool has no rows"
    walk = "; ".join(f"{step.label}, {step.left} left" for step in steps if step.removed)
    fix = f"loosen {emptied.kind}" if emptied.kind.startswith("select.filters.") else HINTS.get(
        emptied.kind, "loosen the filters or check the score columns")
    return f"select: no row selected from {funnel['pool']} rows: {walk}; {fix}"
