"""Rows of a memory-mapped Arrow table read without Python objects per row: a dataset's table in its row order, any
rows of it gathered chunk by chunk, a dataset's columns read part by part, and a view of some of its rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from datasets import Dataset
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

from deita_train.data.mapped_pages import arrow_file_mappings, release

RELEASE_BYTES = 64 * 2**20  # pages (at most) mapped by a `take_rows` between two hand-backs
FAULT_AROUND = 64 * 2**10  # pages the kernel maps around a page fault (Linux's fault_around_bytes)
PART_ROWS = 500_000  # rows a whole-dataset pass reads at a time (`parts`)


def arrow_table(dataset: Dataset, columns: set[str]) -> pa.Table:
    """The dataset's `columns` that exist, in the dataset's column order (at least one: the first column when none
    does, so that the table has the dataset's rows), as an Arrow table in its row order (indices mappings applied)."""
    names = [name for name in dataset.column_names if name in columns] or dataset.column_names[:1]
    table = dataset.data.table.select(names)
    # `Dataset.select` keeps its rows as an indices table (datasets has no public accessor for it). Applied with one
    # Arrow `take`: datasets' own `[:]` gathers row by row (a Python int and a record batch per row: ~1 KB per row).
    indices = dataset._indices
    return table if indices is None else take_rows(table, indices.column(0).to_numpy())


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """`table.take(rows)` chunk by chunk: Arrow's own `take` joins a column's chunks first, which overflows 32-bit
    offsets past 2 GiB of text in a pool of millions of rows. Rows in ascending order (a filter's) stay chunked; any
    other order is restored with one `take` over the (small) gathered rows. Each time the pages read may reach
    `RELEASE_BYTES` (a record batch's buffers, or `FAULT_AROUND` per row and column taken from it, whichever is
    less), and at the end, the memory-mapped pages read so far are handed back (`data/mapped_pages.py`): random rows
    of a big pool do not pile up in the process's resident memory."""
    rows = np.asarray(rows, dtype=np.int64)  # an indices table holds uint64: mixed with int64, numpy gives floats
    batches = table.to_batches()
    starts = np.cumsum([0] + [batch.num_rows for batch in batches])
    if len(rows) < 2 or bool((rows[1:] >= rows[:-1]).all()):  # a filter's rows: each chunk's run found directly
        grouped_rows, order = rows, None
        bounds = np.searchsorted(rows, starts)
    else:
        owner = np.searchsorted(starts, rows, side="right") - 1
        order = np.argsort(owner, kind="stable")
        grouped_rows = rows[order]
        bounds = np.searchsorted(owner[order], np.arange(len(batches) + 1))  # each chunk's run in the sorted rows
    mappings, parts, mapped = arrow_file_mappings(), [], 0
    for chunk in np.flatnonzero(np.diff(bounds)):
        parts.append(batches[chunk].take(pa.array(grouped_rows[bounds[chunk]:bounds[chunk + 1]] - starts[chunk])))
        mapped += min(batches[chunk].get_total_buffer_size(), parts[-1].num_rows * table.num_columns * FAULT_AROUND)
        if mapped >= RELEASE_BYTES:  # the rows taken are copies: hand the mapped pages read so far back
            release(mappings)
            mapped = 0
    release(mappings)
    gathered = pa.Table.from_batches(parts, schema=table.schema)
    if order is None:
        return gathered
    return gathered.take(pa.array(np.argsort(order, kind="stable")))


def take_row_sets(table: pa.Table, row_sets: list[np.ndarray]) -> list[pa.Table]:
    """`take_rows` of each row set, all gathered in one pass over the table's record batches: sets whose rows are
    spread over the whole table (a length-ordered shard's) cost one `take` per record batch together, not each."""
    gathered = take_rows(table, np.concatenate(row_sets) if row_sets else np.empty(0, np.int64))
    bounds = np.cumsum([0] + [len(rows) for rows in row_sets])
    return [gathered.slice(start, end - start) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def parts(dataset: Dataset, columns: set[str]) -> Iterator[tuple[int, pa.Table]]:
    """The dataset's `columns` (as `arrow_table` gives them) `PART_ROWS` rows at a time, each with the position of its
    first row. The mapped pages a part read are handed back before the next is read, so a pass over a pool of any
    size holds one part at a time."""
    for start in range(0, len(dataset), PART_ROWS):
        yield start, arrow_table(dataset.select(range(start, min(start + PART_ROWS, len(dataset)))), columns)
        release(arrow_file_mappings())


def rows_view(dataset: Dataset, rows: np.ndarray) -> Dataset:
    """`dataset.select(rows)` for ascending non-negative int64 `rows` whose memory becomes the view's indices:
    `select` copies them twice (8 bytes a row each), and a fingerprint of the rows is not needed by a view that is
    only read."""
    rows = np.asarray(rows, dtype=np.int64)
    if dataset._indices is not None:  # a view of a view: its rows in the underlying table
        rows = dataset._indices.column(0).to_numpy()[rows].astype(np.int64, copy=False)
    indices = InMemoryTable(pa.table({"indices": pa.array(rows.view(np.uint64))}))
    return Dataset(dataset.data, info=dataset.info.copy(), split=dataset.split, indices_table=indices,
                   fingerprint=generate_random_fingerprint())
