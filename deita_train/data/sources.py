"""Loading the pool (or any list of sources): each source read, canonicalized and cached as Arrow, then concatenated.

Every bad record is either raised (naming file, line or row, and the problem) or, with `on_error: skip`, counted and
listed in the returned `DataReport`. Nothing is dropped silently. Every row keeps where it came from: `source_file`
(a file's name, or `hub id:split`) and `source_row` (the `line` or `record`/`row` number of the error messages).

The path of one source, each step its own module:
- reading.py: the `datasets` builder reads the file (or hub split) into memory-mapped Arrow; a .jsonl/.json file it
  cannot read goes to line_source.py, which reads it line by line (line_reader.py) to name the bad line;
- canonical.py: a batched `map` runs the format adapters and marks each row's problem, raised or skipped after;
- pool_cache.py: the canonical rows and the report are cached by fingerprint, so the next command (or process)
  loads them memory-mapped instead of reading the source again;
- combine.py: the sources are concatenated, each field one type, and `id` added.
Memory stays flat in the pool's size: no step holds a Python list of the rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset

from deita_train.data.canonical import canonicalize
from deita_train.data.checks import option_problems
from deita_train.data.combine import combine
from deita_train.data.config import SourceConfig
from deita_train.data.line_source import read_by_lines
from deita_train.data.mapped_pages import released_pages
from deita_train.data.pool_cache import (
    CachedSource,
    build_folder,
    entry_lock,
    load_entry,
    source_fingerprint,
    store_entry,
)
from deita_train.data.reading import ReadByLines, read_source
from deita_train.data.report import DataError, DataReport, SourceReport, all_skipped

__all__ = ["DataError", "DataReport", "SourceReport", "load_sources", "load_source"]

logger = logging.getLogger(__name__)


def load_sources(sources: list[SourceConfig], seed: int, *, preference: bool = False) -> tuple[Dataset, DataReport]:
    """Concatenate the sources in recipe order; `id` is each row's 0-based position in the result."""
    report = DataReport()
    parts = []
    with released_pages():  # building a pool reads every page of its files: RSS stays flat in its size
        for source in sources:
            if problems := option_problems(source, source.path):
                raise DataError("; ".join(problems))
            part = load_source(source, seed, preference)
            report.sources.append(part.report)
            parts.append(part)
        if not any(len(part.dataset) for part in parts):
            raise DataError(all_skipped(report))
        return combine(parts, sources), report


def load_source(source: SourceConfig, seed: int, preference: bool) -> CachedSource:
    """One source's canonical rows and report: from the cache, or built (by one process at a time) and cached."""
    fingerprint = source_fingerprint(source, seed, preference)
    if (cached := load_entry(fingerprint)) is not None:
        logger.info("%s: %d rows from the cache (%s)", source.path, len(cached.dataset), fingerprint[:12])
        return cached
    with entry_lock(fingerprint):
        if (cached := load_entry(fingerprint)) is None:  # another process may have built it meanwhile
            with build_folder() as build_dir:
                report = SourceReport(path=source.path)
                dataset, unit = build_source(source, seed, preference, report, build_dir)
                store_entry(fingerprint, dataset, report, unit, build_dir)
            cached = load_entry(fingerprint)
            logger.info("%s: %d of %d records kept, cached (%s)", source.path, report.kept, report.read,
                        fingerprint[:12])
    assert cached is not None
    return cached


def build_source(source: SourceConfig, seed: int, preference: bool, report: SourceReport,
                 build_dir: Path) -> tuple[Dataset, str]:
    """(canonical rows, unit of their `source_row`), read with the builder or, when it cannot, the line reader."""
    try:
        raw = read_source(source, build_dir)
    except ReadByLines as fallback:
        logger.info("%s: reading line by line (%s)", source.path, fallback.reason)
        unit = "record" if fallback.suffix == ".json" else "line"
        return read_by_lines(fallback.local, fallback.suffix, source, seed, preference, report, build_dir), unit
    return canonicalize(raw, source, seed, preference, report, build_dir), raw.unit
