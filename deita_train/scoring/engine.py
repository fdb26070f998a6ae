"""The scoring engine: runs each recipe scorer over the pool and writes `scored/`.

For each scorer, in recipe order:
1. plan: rows ordered by the characters of their messages' content (counted with Arrow compute, longest
   first, ties by position) and cut into shards of `shard_size`; each shard's cache key hashes the
   scorer config, its model files and the Arrow content of the shard's rows;
2. score: under `accelerate launch`, process r takes shards r, r + N, r + 2N, ... (a plan that does
   not depend on N, so any number of processes gives the same shards), skips finished ones, loads
   the scorer once, reads one shard's rows at a time from the memory-mapped pool as an Arrow table,
   calls `score_table` on it (Python records for `score_batch`, unless the scorer computes on Arrow;
   the scorer batches by a token budget inside it) and writes each shard with its stats, done marker
   last (`cache.ShardStore`);
3. merge (main process): every shard, in `id` order, becomes the column named by the recipe key
   (and `<key>_<extra>` inspection columns); a record a scorer could not score gets null there, and
   `<key>_reason` says why (null where the record was scored).
A killed run rerun scores only the shards without a done marker. No process holds the whole pool as
Python objects: what grows with the pool is a few numpy integers per row (ids, lengths, the order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from deita_train.data.arrow_rows import arrow_table, take_row_sets
from deita_train.processes import on_main_process, process_state
from deita_train.scoring.base import Score, Scorer, ScoringContext
from deita_train.scoring.cache import ShardStore, shard_keys, table_digest
from deita_train.scoring.config import ScorerConfig
from deita_train.scoring.scorers import SCORERS
from deita_train.storage import save_dataset

SCAN_ROWS = 10_000  # rows per Arrow batch when reading the pool's `id` and `messages` to plan the shards
GATHER_CHARS = 32 * 2**20  # characters of content whose shards are read from the pool in one pass over it


class ScoringInterrupted(KeyboardInterrupt):
    """Ctrl-C while scoring; `str()` says how many of the scorer's shards are finished on disk (a rerun reuses them)."""

    def __init__(self, kept: int, total: int) -> None:
        super().__init__(f"{kept} of {total} shards kept")
        self.kept, self.total = kept, total


@dataclass(frozen=True)
class Shard:
    """Positions (into the pool) of one shard's records, its cache key, and its records' content characters."""

    key: str
    positions: np.ndarray
    chars: int


def score_pool(
    pool: Dataset, scorers: dict[str, ScorerConfig], context: ScoringContext, out_dir: Path
) -> tuple[Dataset, dict[str, Any]]:
    """Score `pool` with every scorer in recipe order; write `out_dir` and return it with per-scorer stats.

    Finished shards live in `<out_dir>_shards/` (beside `out_dir`) and are reused by later runs.
    Every process returns the merged dataset; only the main process writes it.
    """
    state = process_state()
    cache_root = out_dir.with_name(f"{out_dir.name}_shards")
    ids, lengths = scan_pool(pool)
    order = length_order(lengths)
    digests: dict[int, list[str]] = {}
    plans: dict[str, tuple[ShardStore, list[Shard], int]] = {}
    for column, config in scorers.items():
        scorer = SCORERS.get(config.type, f"score.{column}.type")(config, context)
        store = ShardStore(cache_root / config.type)
        shards = plan_shards(pool, lengths, order, scorer, digests)
        reused = sum(store.done(shard.key) for shard in shards)
        state.wait_for_everyone()  # every process has seen what was finished before this run
        mine = shards[state.process_index :: state.num_processes]
        try:
            run_shards(scorer, column, pool, [s for s in mine if not store.done(s.key)], store,
                       state.is_main_process)
        except KeyboardInterrupt as interrupt:
            raise ScoringInterrupted(sum(store.done(s.key) for s in shards), len(shards)) from interrupt
        plans[column] = (store, shards, reused)
    state.wait_for_everyone()
    stats = on_main_process(lambda: write_scored(pool, ids, plans, out_dir), "merging the scored shards")
    return load_from_disk(str(out_dir)), stats


def write_scored(pool: Dataset, ids: np.ndarray, plans: dict[str, tuple[ShardStore, list[Shard], int]],
                 out_dir: Path) -> dict[str, Any]:
    """Merge every scorer's shards into columns of `pool`, save it to `out_dir`, return per-scorer stats."""
    stats: dict[str, Any] = {}
    scored = pool
    for column, (store, shards, reused) in plans.items():
        table, stats[column] = merge_shards(store, shards, ids)
        stats[column]["shards"] = {"total": len(shards), "reused": reused}
        scored = add_score_columns(scored, column, table, ids)
    save_dataset(scored, out_dir)
    return stats


def scan_pool(pool: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every row's `id` and the characters of its messages' content, read in Arrow batches of `SCAN_ROWS`."""
    ids, lengths = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for batch in pool.with_format("arrow", columns=["id", "messages"]).iter(batch_size=SCAN_ROWS):
        ids.append(batch.column("id").to_numpy().astype(np.int64, copy=False))
        lengths.extend(content_lengths(chunk) for chunk in batch.column("messages").chunks)
    return np.concatenate(ids), np.concatenate(lengths)


def content_lengths(messages: pa.Array) -> np.ndarray:
    """Per row of a list<struct<role, content>> array: characters (code points) of all its `content`, null as 0."""
    chars = pc.utf8_length(pc.struct_field(pc.list_flatten(messages), "content")).fill_null(0)
    totals = np.concatenate([[0], np.cumsum(chars.to_numpy(), dtype=np.int64)])
    ends = np.concatenate([[0], np.cumsum(pc.list_value_length(messages).fill_null(0).to_numpy(), dtype=np.int64)])
    return totals[ends[1:]] - totals[ends[:-1]]


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Positions longest first, ties by position: a shard holds similar lengths."""
    return np.argsort(-lengths, kind="stable")


def plan_shards(pool: Dataset, lengths: np.ndarray, order: np.ndarray, scorer: Scorer,
                digests: dict[int, list[str]] | None = None) -> list[Shard]:
    """`order` cut every `shard_size`, each shard keyed by the scorer and the Arrow content of its rows.

    `lengths` are the rows' content characters (`scan_pool`), which size the passes that read the shards' rows.
    `digests` keeps those contents' digests by shard size, so the next scorer with the same size reads no row.
    """
    size = scorer.config.shard_size
    if size <= 0:
        raise ValueError(f"score.<column>.shard_size: must be positive, got {size}")
    cuts = [order[start : start + size] for start in range(0, len(order), size)]
    chars = [int(lengths[positions].sum()) for positions in cuts]
    digests = {} if digests is None else digests
    if size not in digests:
        rows = arrow_table(pool, set(pool.column_names))
        digests[size] = [table_digest(table) for group in gather_groups(chars)
                         for table in take_row_sets(rows, cuts[group])]
    keys = shard_keys(scorer.config, scorer.models(), digests[size])
    return [Shard(*shard) for shard in zip(keys, cuts, chars, strict=True)]


def gather_groups(chars: list[int]) -> Iterator[slice]:
    """Runs of consecutive shards holding up to `GATHER_CHARS` characters of content (at least one shard each),
    whose rows are read in one pass over the pool: a length-ordered shard holds rows from every record batch."""
    start, total = 0, 0
    for index, count in enumerate(chars):
        if index > start and total + count > GATHER_CHARS:
            yield slice(start, index)
            start, total = index, 0
        total += count
    if start < len(chars):
        yield slice(start, len(chars))


def run_shards(scorer: Scorer, column: str, pool: Dataset, todo: list[Shard], store: ShardStore,
               show_progress: bool) -> None:
    """Load the scorer once, score and write each unfinished shard, free the scorer."""
    if not todo:
        return
    progress = tqdm(total=sum(len(s.positions) for s in todo), desc=f"score {column}", disable=not show_progress)
    table = arrow_table(pool, {"id", "messages", *scorer.fields})
    scorer.load()
    try:
        for group in gather_groups([shard.chars for shard in todo]):
            for shard, rows in zip(todo[group], take_row_sets(table, [s.positions for s in todo[group]]), strict=True):
                score_shard(scorer, column, shard, rows, store)
                progress.update(rows.num_rows)
    finally:
        scorer.close()
        progress.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the freed scorer's memory back before the next scorer or training


def score_shard(scorer: Scorer, column: str, shard: Shard, rows: pa.Table, store: ShardStore) -> None:
    """Score one shard's `rows` and write them with their stats."""
    ids = rows.column("id").to_pylist()
    try:
        scores = scorer.score_table(rows)
    except Exception as error:
        error.add_note(f"score.{column} ({scorer.name}): while scoring the shard of records with ids "
                       f"{ids[:8]}{' ...' if len(ids) > 8 else ''}")
        raise
    if len(scores) != len(ids):
        raise RuntimeError(f"scorer {scorer.name} returned {len(scores)} scores for {len(ids)} records")
    store.write(shard.key, shard_table(ids, scores, scorer.per_turn), {"records": len(ids), **summarize(scores)})


def value_array(values: list[Any], per_turn: bool) -> pa.Array:
    """Per-turn lists -> list<double>; vectors -> fixed_size_list<float32|float16>; floats -> double."""
    present = next((v for v in values if v is not None), None)
    if per_turn:
        return pa.array(values, type=pa.list_(pa.float64()))
    if isinstance(present, np.ndarray):
        item = pa.from_numpy_dtype(present.dtype)
        return pa.array([None if v is None else v.tolist() for v in values], type=pa.list_(item, len(present)))
    if present is None:
        return pa.nulls(len(values))  # a shard with nothing scored: the type comes from the other shards
    return pa.array(values, type=pa.float64())


def shard_table(ids: list[int], scores: list[Score], per_turn: bool) -> pa.Table:
    """`id`, `value`, `reason` (why a record has no value; null where it has one), one `extra:<name>` per extra."""
    columns = {"id": pa.array(ids, type=pa.int64()), "value": value_array([s.value for s in scores], per_turn),
               "reason": pa.array([s.reason for s in scores], type=pa.string())}
    for name in sorted({name for score in scores for name in score.extras}):
        extra = [score.extras.get(name) for score in scores]
        columns[f"extra:{name}"] = value_array(extra, per_turn)
    return pa.table(columns)


def merge_shards(store: ShardStore, shards: list[Shard], ids: np.ndarray) -> tuple[pa.Table, dict[str, Any]]:
    """All shards of one scorer as one table in pool order, and their summed stats.

    A shard cached before reasons were kept (no `reason` column) gets "unknown (cached before reasons were
    kept)" where its value is null: its numbers are still right, so it is not scored again.
    """
    tables, totals, reasons = [], Counter(), Counter()
    for shard in shards:
        table, stats = store.read(shard.key)
        if "reason" not in table.column_names:
            unknown = pa.scalar("unknown (cached before reasons were kept)")
            table = table.append_column("reason", pc.if_else(table.column("value").is_null(), unknown,
                                                             pa.scalar(None, pa.string())))
        tables.append(table)
        totals.update({k: stats[k] for k in ("records", "scored", "truncated")})
        reasons.update(stats["unscorable"])
    if not tables:
        empty = {"id": pa.array([], pa.int64()), "value": pa.nulls(0), "reason": pa.array([], pa.string())}
        return pa.table(empty), {**dict(totals), "unscorable": {}}
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.sort_by("id")
    if not np.array_equal(table.column("id").to_numpy(), np.sort(ids)):
        raise RuntimeError(f"scoring shards under {store.root} do not cover the pool's ids; "
                           "delete that folder and rerun")
    return table, {**dict(totals), "unscorable": dict(reasons)}


def add_score_columns(pool: Dataset, column: str, table: pa.Table, ids: np.ndarray) -> Dataset:
    """`pool` (whose rows have `ids`) with `column`, `<column>_reason` (and `<column>_<extra>`) from `table`, whose
    rows are in `id` order."""
    order = np.argsort(ids, kind="stable")
    rows = np.empty(len(order), dtype=np.int64)
    rows[order] = np.arange(len(order))  # table row of each pool row
    extras = {name: f"{column}_{name.split(':', 1)[1]}" for name in table.column_names if name.startswith("extra:")}
    renamed = {"value": column, "reason": f"{column}_reason", **extras}
    new = table.select(list(renamed)).rename_columns(list(renamed.values())).take(pa.array(rows))
    if new.num_columns and pa.types.is_null(new.column(column).type):
        new = new.set_column(0, column, pa.array([None] * len(rows), type=pa.float64()))
    existing = [name for name in new.column_names if name in pool.column_names]
    return concatenate_datasets([pool.remove_columns(existing), Dataset(InMemoryTable(new))], axis=1)


def summarize(scores: list[Score]) -> dict[str, Any]:
    """Counts for the report: scored, truncated, and unscorable by reason."""
    reasons = Counter(score.reason for score in scores if score.reason is not None)
    return {
        "scored": sum(score.value is not None for score in scores),
        "truncated": sum(score.truncated for score in scores),
        "unscorable": dict(reasons),
    }
