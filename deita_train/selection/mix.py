"""`select.mix`: per-source shares of the budget, the strategy run within each source's share.

Each candidate's source is its value in the `mix.by` column (default `source_file`); rows of a source without a
share are not selected (the funnel's `not_in_mix`). Source s gets round(share_s x budget) rows by largest
remainders (the parts sum to the budget exactly) and the strategy, given that budget, runs on the source's
candidates alone. A source that yields fewer rows than its budget is short: with `shortfall: refuse` that is a
`UserError` naming it; with `redistribute` the rows it lacks go to the sources not yet short, in proportion to
their shares (again by largest remainders), whose strategies run again with the larger budget, until nothing is
short or every source is exhausted. A source whose budget rounds to 0 is not run: its rows are beyond the budget.

Selection order: each source keeps its strategy's order, and the sources are interleaved evenly: the k-th of a
source's n picks sits at (k + 0.5) / n, ties in `shares` order, so every prefix of the selection holds each
source's share to within about a row.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from deita_train.errors import UserError
from deita_train.selection.base import Removed, Strategy
from deita_train.selection.config import MixConfig, SelectConfig, StrategyConfig
from deita_train.selection.scores import arrow_column
from deita_train.selection.strategies import STRATEGIES

logger = logging.getLogger(__name__)


def build_strategy(config: SelectConfig, seed: int, key: str = "select",
                   shares: dict[str, float] | None = None) -> Strategy:
    """`config`'s strategy, within `config.mix`'s shares (or `shares`, which replace them) when it mixes."""
    strategy = STRATEGIES.get(config.strategy, f"{key}.strategy")
    if config.mix is None:
        return strategy(config.options, seed)
    mix = config.mix if shares is None else replace(config.mix, shares=shares)
    return MixedStrategy(strategy, config.options, mix, seed, key)


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` split in proportion to `weights` (>= 0, not all 0) by largest remainders: the parts sum to `total`,
    each within one row of its exact quota; equal remainders go to the earlier weight."""
    quotas = total * weights / weights.sum()
    parts = np.floor(quotas).astype(np.int64)
    parts[np.argsort(parts - quotas, kind="stable")[: total - int(parts.sum())]] += 1
    return parts


def source_index(dataset: Dataset, by: str, names: list[str], key: str = "select") -> np.ndarray:
    """Per row of `dataset`, the index in `names` of its `by` value (cast to a string); -1 where it is not there."""
    values = arrow_column(dataset, by)
    try:
        values = values.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise UserError(f"{key}.mix.by: column {by!r} holds {values.type}, not a source name: {error}") from error
    return pc.index_in(values, value_set=pa.array(names, pa.string())).fill_null(-1).to_numpy().astype(np.int64)


class MixedStrategy(Strategy):
    """A registered strategy run within each source's share of the budget (module docstring). Its funnel and audit
    trail hold `not_in_mix` and the strategy's removals and unscored rows over all sources; `sources` the
    per-source counts (`selection.json` `funnel.mix`)."""

    def __init__(self, strategy: type[Strategy], config: StrategyConfig, mix: MixConfig, seed: int,
                 key: str = "select") -> None:
        super().__init__(config, seed)
        self.strategy = strategy
        self.name = strategy.name
        self.removals = ("not_in_mix", *strategy.removals)
        self.mix = mix
        self.key = key
        self.sources: dict[str, dict[str, Any]] = {}
        self.outside: dict[str, int] = {}  # rows by source value without a share

    def select(self, scored: Dataset) -> list[int]:
        names = list(self.mix.shares)
        shares = np.array([self.mix.shares[name] for name in names], dtype=np.float64)
        index = source_index(scored, self.mix.by, names, self.key)
        members = [np.flatnonzero(index == s) for s in range(len(names))]
        budget = apportion(self.config.budget, shares)
        given, received = budget.copy(), np.zeros_like(budget)
        runs: dict[int, tuple[Strategy | None, np.ndarray]] = {}
        todo, open_ = np.flatnonzero(given > 0), np.ones(len(names), dtype=bool)
        while True:
            runs |= {int(s): self.run(scored, members[s], int(given[s])) for s in todo}
            selected = np.array([len(runs[s][1]) if s in runs else 0 for s in range(len(names))])
            short = given - selected
            if not short.any():
                break
            if self.mix.shortfall == "refuse":
                s = int(np.flatnonzero(short)[0])
                raise UserError(f"{self.key}.mix: source {names[s]!r} (share {shares[s]:g}) yields {selected[s]} rows "
                                f"of the {given[s]} its share of the budget asks for ({len(members[s])} candidates "
                                f"after decontamination and the filters); lower its share, or set "
                                f"{self.key}.mix.shortfall: redistribute")
            open_ &= short == 0
            given = selected
            if not open_.any():
                break
            extra = apportion(int(short.sum()), shares * open_)
            given, received, todo = given + extra, received + extra, np.flatnonzero(extra)
        self.sources = {name: {"share": float(shares[s]), "candidates": len(members[s]), "budget": int(budget[s]),
                               "received": int(received[s]), "selected": int(selected[s]),
                               "shortfall": int(budget[s] + received[s] - selected[s])}
                        for s, name in enumerate(names)}
        self.merge(scored, index, members, runs)
        self.log()
        picks = [runs[s][1] for s in sorted(runs)]
        spread = np.concatenate([(np.arange(len(p)) + 0.5) / len(p) for p in picks if len(p)] or [np.zeros(0)])
        return np.concatenate(picks)[np.argsort(spread, kind="stable")].tolist()

    def run(self, scored: Dataset, rows: np.ndarray, budget: int) -> tuple[Strategy | None, np.ndarray]:
        """The strategy with `budget`, over the rows at `rows`; its picks as rows of `scored` (none without rows)."""
        if not len(rows):
            return None, np.zeros(0, dtype=np.int64)
        strategy = self.strategy(replace(self.config, budget=budget), self.seed)
        return strategy, rows[np.asarray(strategy.select(scored.select(rows)), dtype=np.int64)]

    def merge(self, scored: Dataset, index: np.ndarray, members: list[np.ndarray],
              runs: dict[int, tuple[Strategy | None, np.ndarray]]) -> None:
        """`unranked`, `removed` and `found` over all sources, as one strategy's: rows of `scored`."""
        self.unranked = np.zeros(len(scored), dtype=bool)
        parts: dict[str, list[tuple[np.ndarray, list[str]]]] = {name: [] for name in self.strategy.removals}
        details = []
        for s, (strategy, _) in runs.items():
            if strategy is None:
                continue
            if strategy.unranked is not None:
                self.unranked[members[s]] = strategy.unranked
            for name, removed in strategy.removed.items():
                parts[name].append((members[s][removed.rows], removed.notes))
            details.append(strategy.details())
        outside = np.flatnonzero(index < 0)
        values = arrow_column(scored, self.mix.by).take(pa.array(outside)).cast(pa.string()).fill_null("null")
        encoded = values.dictionary_encode()
        labels = np.array([f"{self.mix.by} {value!r} has no share in {self.key}.mix"
                           for value in encoded.dictionary.to_pylist()], dtype=object)
        codes = encoded.indices.to_numpy()
        self.outside = dict(zip(encoded.dictionary.to_pylist(), np.bincount(codes).tolist(), strict=True))
        self.removed = {"not_in_mix": Removed(outside, labels[codes].tolist())}
        for name, found in parts.items():
            rows = np.concatenate([r for r, _ in found] or [np.zeros(0, dtype=np.int64)])
            notes = np.concatenate([np.asarray(n, dtype=object) for _, n in found] or [np.zeros(0, dtype=object)])
            order = np.argsort(rows, kind="stable")
            self.removed[name] = Removed(rows[order], notes[order].tolist())
        self.found = {**merged_details(details), **{name: len(self.removed[name].rows) for name in self.removals}}

    def log(self) -> None:
        """One INFO line per source; a WARNING for each source that fell short."""
        for name, source in self.sources.items():
            logger.info("%s.mix: %s %r share %g: budget %d, received %d, selected %d of %d candidates", self.key,
                        self.mix.by, name, source["share"], source["budget"], source["received"], source["selected"],
                        source["candidates"])
            if source["shortfall"]:
                logger.warning("%s.mix: %r yields %d rows, %d short of its budget (%d, received %d): the rows it "
                               "lacks go to the other sources by their shares, as far as they have rows", self.key,
                               name, source["selected"], source["shortfall"], source["budget"], source["received"])

    def record(self) -> dict[str, Any]:
        """The mix in `selection.json`'s funnel: per source its share, candidates, budget, rows received from short
        sources, selected and shortfall; the rows redistributed; the rows without a share, by source value."""
        return {"by": self.mix.by, "on_shortfall": self.mix.shortfall,
                "redistributed": sum(source["received"] for source in self.sources.values()),
                "sources": self.sources, "not_in_mix": self.outside}

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "mix": vars(self.mix)}


def merged_details(details: list[dict[str, Any]]) -> dict[str, Any]:
    """The sources' `details()` as one: counts summed; other values kept where every source agrees."""
    merged = {}
    for key in dict.fromkeys(key for found in details for key in found):
        values = [found[key] for found in details if key in found]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
        elif all(v == values[0] for v in values):
            merged[key] = values[0]
    return merged
