"""Reading a source into a raw Arrow dataset with the `datasets` builders: `load_dataset("json" | "parquet" | "csv",
data_files=...)` for a local file (.jsonl, .json holding a list of records, .parquet, .csv, each optionally .gz),
`load_dataset(path, name, split=...)` for a hub id, `load_from_disk` for a folder `save_to_disk` wrote (`synth/data`,
say). The rows stay memory-mapped; nothing here holds a Python list
of the source. (A .json list is first rewritten as JSONL, one record decoded at a time: the builder's own reading
of it would hold every record as a Python object and round floats to 9 significant digits.)

A .jsonl or .json file the builder cannot read as the line reader would (a line that is not JSON, bytes that are not
UTF-8, a field typed differently across records, strings the builder would turn into timestamps) raises
`ReadByLines`: the caller reads that file with the line reader, which names the line.

Each raw row's number (its `source_row`) is a 1-based `line` for JSONL and a 0-based `record` (.json) or `row`
(parquet, csv, hub) otherwise. The builder skips blank JSONL lines, so when a file has some, `RawSource.lines`
holds each row's line, found by a byte scan.
"""

from __future__ import annotations

import gzip
import importlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from datasets import Dataset

from deita_train.data.arrow_memory import system_allocator
from deita_train.data.checks import missing_file
from deita_train.data.config import SourceConfig
from deita_train.data.line_numbers import count_lines, open_bytes, record_lines
from deita_train.data.line_reader import json_list_items
from deita_train.data.progress import WATCHED_BYTES, progress_bars, quiet_logger
from deita_train.data.report import DataError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")  # each optionally .gz
GLOB_CHARACTERS = set("*?[]{}")  # `data_files` are patterns: a file named with these is read through a link
JSON_OPTIONS = {"on_mixed_types": None, "parse_agent_traces": False}  # a mixed-type field fails, it is not re-encoded
CSV_OPTIONS = {"keep_default_na": False}  # cells are text: an empty cell is "", "NA" or "null" stay words
BATCH_ROWS = 10_000  # rows per record batch of every Arrow file a pool is read into (the builders', the map's), and
# per `map` batch: opening a 10M-row file, or reading one column of it, faults in the pages around each of 1,000
# record batches (up to 64 KB each), not around each of the 10,000 that the builders' default of 1,000 rows makes


@dataclass
class RawSource:
    """A source's raw records as read by a builder, and how their positions become `source_row` numbers."""

    dataset: Dataset
    unit: str  # "line" (JSONL, 1-based), "record" (.json) or "row" (parquet, csv, hub), 0-based
    lines: np.ndarray | None = None  # JSONL with blank lines: each row's line

    @property
    def base(self) -> int:
        """The number of the first row when rows are numbered by position."""
        return 1 if self.unit == "line" else 0


class ReadByLines(Exception):  # noqa: N818 (a signal to the caller, not an error shown to anyone)
    """The builder cannot read `local` as the line reader would; `reason` says why (for the log)."""

    def __init__(self, local: Path, suffix: str, reason: str) -> None:
        super().__init__(reason)
        self.local, self.suffix, self.reason = local, suffix, reason


def source_file(source: SourceConfig) -> str:
    """What rows record as their `source_file`: a local file's name (never its directory), or `hub id[:name]:split`."""
    if Path(source.path).expanduser().exists():
        return Path(source.path).name
    return ":".join(part for part in (source.path, source.name, source.split) if part)


def local_file(source: SourceConfig) -> Path | None:
    """The source's local file; None for a hub id. A local-looking path that does not exist never goes to the hub."""
    local = Path(source.path).expanduser()
    if local.exists():
        return local
    if problem := missing_file(source.path):
        raise DataError(problem)
    return None


def file_suffix(local: Path, shown: str) -> str:
    """The file's kind (.jsonl, .json, .parquet or .csv), without a .gz."""
    if local.is_dir():
        raise DataError(f"{shown}: is a directory but not a saved dataset (no state.json); point the source at a "
                        ".json, .jsonl, .parquet or .csv file, or a folder `save_to_disk` wrote")
    name = local.name.removesuffix(".gz")
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DataError(f"{shown}: unsupported file type; use .json, .jsonl, .parquet or .csv (optionally .gz)")


def read_source(source: SourceConfig, build_dir: Path) -> RawSource:
    """The source's raw records (builder caches go under `build_dir`, which the caller removes)."""
    local = local_file(source)
    if local is None:
        return read_hub(source)
    if (local / "state.json").is_file():  # a folder `Dataset.save_to_disk` wrote (synth/data, say)
        return read_saved(local, source.path)
    suffix = file_suffix(local, source.path)
    readers = {".jsonl": read_jsonl, ".json": read_json, ".parquet": read_parquet, ".csv": read_csv}
    return readers[suffix](local, source.path, build_dir)


def build(kind: str, local: Path, build_dir: Path, **options: Any) -> Dataset:
    """`load_dataset(kind, data_files=local, split="train")`, cached under `build_dir`."""
    path = local.resolve()
    if GLOB_CHARACTERS & set(str(path)):
        link = build_dir / "input" / ("source" + "".join(path.suffixes[-2:]))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
        path = link
    watched = local.stat().st_size >= WATCHED_BYTES
    with progress_bars(watched), quiet_logger(f"datasets.packaged_modules.{kind}.{kind}"), no_whole_file_reads(), \
            system_allocator():
        return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(build_dir / "builder"),
                                     writer_batch_size=BATCH_ROWS, **options)


@contextmanager
def no_whole_file_reads() -> Iterator[None]:
    """Turn off the json builder's last resort when pyarrow rejects a chunk (pandas reading the whole file into
    memory): it fails at once instead, and the line reader reads the file, memory bounded, naming the bad line."""
    builder = importlib.import_module("datasets.packaged_modules.json.json")
    original = getattr(builder, "pandas_read_json", None)
    if original is None:
        yield
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ValueError("not reading the whole file into memory")

    builder.pandas_read_json = refuse
    try:
        yield
    finally:
        builder.pandas_read_json = original


def root_cause(error: BaseException) -> BaseException:
    """The innermost error a builder's error was raised from."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def has_timestamps(kind: pa.DataType) -> bool:
    """Whether an Arrow type holds timestamps anywhere (pyarrow's JSON reader turns date-like strings into them)."""
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return True
    return any(has_timestamps(kind.field(i).type) for i in range(kind.num_fields))


def read_jsonl(local: Path, shown: str, build_dir: Path) -> RawSource:
    dataset = read_json_with_builder(local, ".jsonl", build_dir)
    if count_lines(local) == len(dataset):  # no blank line: row N is line N + 1
        return RawSource(dataset, "line")
    lines = record_lines(local)
    if len(lines) != len(dataset):
        raise ReadByLines(local, ".jsonl", f"the builder read {len(dataset)} rows from {len(lines)} non-blank lines")
    return RawSource(dataset, "line", lines)


def read_json(local: Path, shown: str, build_dir: Path) -> RawSource:
    """A .json list of records, rewritten as JSONL for the builder (whose own reading of a .json list round-trips
    floats through ujson at 9 significant digits); its row N is record N."""
    lines = build_dir / "input" / "records.jsonl"
    lines.parent.mkdir(parents=True, exist_ok=True)
    with open_bytes(local) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ReadByLines(local, ".json", "not UTF-8") from error
    del data
    with open(lines, "w", encoding="utf-8") as target:
        try:
            for record in json_list_items(text):
                if not isinstance(record, dict):
                    raise ValueError(f"a {type(record).__name__} among the records")
                target.write(json.dumps(record) + "\n")
        except ValueError as error:  # JSON errors, a value that is not a list, an item that is not an object
            raise ReadByLines(local, ".json", str(error)) from error
    return RawSource(read_json_with_builder(lines, ".json", build_dir, local), "record")


def json_options() -> dict[str, Any]:
    """JSON_OPTIONS this version of `datasets` knows (an older one has no `on_mixed_types`: mixed types fail there)."""
    from datasets.packaged_modules.json.json import JsonConfig

    return {name: value for name, value in JSON_OPTIONS.items() if name in JsonConfig.__dataclass_fields__}


def read_json_with_builder(path: Path, suffix: str, build_dir: Path, local: Path | None = None) -> Dataset:
    """`path` (JSONL) read by the json builder; `local`: the source file, when `path` is a rewrite of it."""
    local = local or path
    try:
        dataset = build("json", path, build_dir, **json_options())
    except Exception as error:  # the line reader says what is wrong, and where
        raise ReadByLines(local, suffix, f"{type(root_cause(error)).__name__}: {root_cause(error)}") from error
    if not len(dataset):
        raise ReadByLines(local, suffix, "no rows")
    if any(has_timestamps(field.type) for field in dataset.data.schema):
        raise ReadByLines(local, suffix, "the builder would turn date-like strings into timestamps")
    for batch in dataset.data.table.to_batches():  # pyarrow's JSON reader does not check that strings are UTF-8
        try:
            batch.validate(full=True)
        except pa.ArrowInvalid as error:
            raise ReadByLines(local, suffix, f"not UTF-8 ({error})") from error
    return dataset


def read_parquet(local: Path, shown: str, build_dir: Path) -> RawSource:
    import pyarrow.dataset
    import pyarrow.parquet as pq

    if local.name.endswith(".gz"):  # the builder needs to seek: decompress a copy first
        plain = build_dir / "input" / local.name.removesuffix(".gz")
        plain.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(local, "rb") as source, open(plain, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        local = plain
    # pre_buffer off: pyarrow's read-ahead cache kept every row group read so far (2.5 GB of RSS for a 10M-row pool);
    # batches of BATCH_ROWS: the builder's default is a whole row group (a million rows, in some files) at a time
    scan = pyarrow.dataset.ParquetFragmentScanOptions(pre_buffer=False)
    try:
        rows = pq.read_metadata(local).num_rows
        options = {"fragment_scan_options": scan, "batch_size": BATCH_ROWS}
        dataset = build("parquet", local, build_dir, **options) if rows else None
    except Exception as error:
        raise DataError(f"{shown}: cannot be read as parquet: {root_cause(error)}") from None
    if dataset is None or not len(dataset):
        raise DataError(f"{shown}: no records (the file has no rows)")
    return RawSource(dataset, "row")


def read_csv(local: Path, shown: str, build_dir: Path) -> RawSource:
    """A CSV file; when its columns' types differ between chunks, read again with every column as text."""
    import pandas as pd

    try:
        head = pd.read_csv(local, nrows=1, **CSV_OPTIONS)
    except pd.errors.EmptyDataError:
        raise DataError(f"{shown}: no records (the file is empty)") from None
    except Exception as error:
        raise DataError(f"{shown}: cannot be read as CSV: {error}") from None
    if head.empty:
        raise DataError(f"{shown}: no records (the file has a header only)")
    try:
        dataset = build("csv", local, build_dir, **CSV_OPTIONS)
    except Exception as error:
        try:
            features = datasets.Features({name: datasets.Value("string") for name in head.columns})
            dataset = build("csv", local, build_dir / "text", features=features, **CSV_OPTIONS)
        except Exception:
            raise DataError(f"{shown}: cannot be read as CSV: {root_cause(error)}") from None
    return RawSource(dataset, "row")


def read_saved(local: Path, shown: str) -> RawSource:
    """A dataset `save_to_disk` wrote, memory-mapped; its row N is row N."""
    dataset = datasets.load_from_disk(str(local))
    if not isinstance(dataset, Dataset):
        raise DataError(f"{shown}: holds a DatasetDict; point the source at one of its splits' folders")
    if not len(dataset):
        raise DataError(f"{shown}: no records (the saved dataset has no rows)")
    return RawSource(dataset, "row")


def read_hub(source: SourceConfig) -> RawSource:
    """A hub dataset's split (`datasets` caches the download as usual)."""
    dataset = datasets.load_dataset(source.path, source.name, split=source.split, writer_batch_size=BATCH_ROWS)
    if not len(dataset):
        raise DataError(f"{source.path}: no records (split {source.split!r} has no rows)")
    return RawSource(dataset, "row")
