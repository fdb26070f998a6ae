"""The `pool:` section: parsed into `SourceConfig`s and checked (options, paths) without reading the data; and the
pool's columns, read from the first records of each local source, so later sections can check the columns they
name before anything runs.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

from deita_train.data.checks import source_problems
from deita_train.data.config import SourceConfig
from deita_train.data.formats import CANONICAL_COLUMNS, original_fields
from deita_train.data.line_reader import json_list_items
from deita_train.recipe.sections import Section
from deita_train.recipe.strict import convert
from deita_train.synth.config import made_by_synth

HEAD_RECORDS = 100  # records read per source to learn its fields
HEAD_BYTES = 1 << 20  # at most this much of a .json file is read for them


def parse_sources(key: str):
    """A parser of a list of sources at `key` (`pool`, `dpo.dataset`, ...)."""

    def parse(raw: Any, problems: list[str]) -> list[SourceConfig] | None:
        return convert(raw, list[SourceConfig], key, problems)

    return parse


def sources_problems(sources: list[SourceConfig], key: str, recipe: Any = None) -> list[str]:
    """Every problem of every source in a list, keyed `<key>.<index>`; a source the recipe's synth stage will write
    need not exist yet."""
    return [problem for i, source in enumerate(sources)
            for problem in source_problems(source, f"{key}.{i}", exists=made_by_synth(source.path, recipe))]


def pool_problems(sources: list[SourceConfig], recipe: Any) -> list[str]:
    if not sources:
        return ["pool: list at least one source"]
    return sources_problems(sources, "pool", recipe)


POOL = Section(parse=parse_sources("pool"), problems=pool_problems)


def pool_columns(sources: list[SourceConfig]) -> set[str] | None:
    """The columns the loaded pool will have, from the first records of each source; None when a source cannot be
    read cheaply (a hub dataset, a file too large to peek into)."""
    columns = set(CANONICAL_COLUMNS)
    for source in sources:
        records = head_records(Path(source.path).expanduser())
        if records is None:
            return None
        for record in records:
            columns |= original_fields(record).keys()
    return columns


def head_records(path: Path) -> list[dict[str, Any]] | None:
    """Up to HEAD_RECORDS records from the start of a local json/jsonl/parquet/csv file (optionally .gz); for parquet
    and csv, the column names."""
    if not path.is_file():
        return None
    name = path.name.removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return [dict.fromkeys(pq.read_schema(path).names)]
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            text = handle.read(HEAD_BYTES)
    except OSError:
        return None
    if name.endswith(".jsonl"):
        lines = text.splitlines()[:-1] if len(text) == HEAD_BYTES else text.splitlines()  # drop a cut last line
        lines = [line for line in lines if line.strip()][:HEAD_RECORDS]
        return [record for line in lines if isinstance(record := loads_or_none(line), dict)]
    if name.endswith(".json"):
        return json_array_head(text)
    if name.endswith(".csv"):
        header = next(csv.reader(io.StringIO(text)), None)
        return [dict.fromkeys(header)] if header else None
    return None


def loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def json_array_head(text: str) -> list[dict[str, Any]] | None:
    """The first records of a JSON list whose text starts with `text` (decoded as the line reader decodes it)."""
    records = []
    try:
        for record in json_list_items(text):
            if isinstance(record, dict):
                records.append(record)
            if len(records) == HEAD_RECORDS:
                break
    except ValueError:  # the text ends inside a record (JSONDecodeError), or holds no list (NotAList)
        pass
    return records or None
