"""The line reader: a .jsonl or .json file read in Python, one line (or .json record) at a time, so that a record that
cannot be read is named by its line or record number and raised or skipped on its own.

Used only for a file the `datasets` builder cannot read (bad JSON, bytes that are not UTF-8, a field typed
differently across records): it says where the problem is. JSONL is streamed line by line; a .json list is parsed
whole, as the builder parses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from deita_train.data.conversation import RecordError
from deita_train.data.line_numbers import open_bytes
from deita_train.data.report import DataError

RE_ENCODE = "re-encode the file as UTF-8 (e.g. `iconv -f <its encoding> -t utf-8`)"


class NotAList(ValueError):
    """A .json file holding one value that is not a list; the message is its type."""


class Raw(NamedTuple):
    """One raw record (a `RecordError` when it could not be read) and its position: a 1-based `line` (JSONL),
    or a 0-based `record` (.json) or `row` (parquet, csv, hub)."""

    unit: str
    number: int
    record: Any

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


def utf8_position(data: bytes, start: int, offset: int = 0) -> str:
    """The byte at `data[start]`, its 1-based column on its line, and its offset in the file."""
    column = start - data.rfind(b"\n", 0, start)
    return f"byte 0x{data[start]:02x} at column {column} (byte offset {offset + start})"


def jsonl_records(path: Path) -> Iterator[Raw]:
    """One record per non-blank line, each line decoded on its own so that a bad line is one bad record."""
    offset = 0
    with open_bytes(path) as handle:
        for number, data in enumerate(handle, start=1):
            if data.strip():
                yield Raw("line", number, line_record(data, offset))
            offset += len(data)


def line_record(data: bytes, offset: int) -> Any:
    """One JSONL line's record, or a RecordError saying why it cannot be read (`offset`: the line's start)."""
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        return RecordError(f"not UTF-8: {utf8_position(data, error.start, offset)}; {RE_ENCODE}")
    except json.JSONDecodeError as error:
        return RecordError(f"not valid JSON: {error.msg} at column {error.colno}")


def json_records(path: Path, shown: str, on_error: str) -> tuple[int, Callable[[], Iterator[Raw]]]:
    """How many records a .json list holds, and an iterator over them (`shown`: the path as the recipe gives it):
    the text is held, each record decoded as it is reached. Bytes that are not UTF-8 stop the run, or
    (`on_error: skip`) mark their records."""
    with open_bytes(path) as handle:
        data = handle.read()
    if not data.strip():
        raise DataError(f"{shown}: no records (the file is empty)")
    try:
        text, foreign = data.decode("utf-8-sig"), False
    except UnicodeDecodeError as error:
        if on_error == "raise":
            line = data.count(b"\n", 0, error.start) + 1
            raise DataError(f"{shown}: not UTF-8 at line {line}: {utf8_position(data, error.start)}; {RE_ENCODE}, "
                            "or set on_error: skip to skip the records holding such bytes") from None
        text, foreign = data.decode("utf-8-sig", errors="surrogateescape"), True
    del data

    def records() -> Iterator[Raw]:
        try:
            for number, record in enumerate(json_list_items(text)):
                yield Raw("record", number, foreign_byte_error(record) if foreign else record)
        except json.JSONDecodeError as error:
            raise DataError(f"{shown}: not valid JSON at line {error.lineno} column {error.colno}: {error.msg}; "
                            "a file of one record per line should be named .jsonl") from None
        except NotAList as error:
            raise DataError(f"{shown}: a .json source must hold a list of records, got {error}") from None

    count = sum(1 for _ in records())  # decodes the whole list once: a JSON error stops the run before any record
    if not count:
        raise DataError(f"{shown}: no records (the file holds an empty list)")
    return count, records


def json_list_items(text: str) -> Iterator[Any]:
    """The items of the JSON list `text`, decoded one at a time; errors as `json.loads(text)` raises them, and
    `NotAList` when the text holds another value."""
    decoder, blank = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")
    position = blank.match(text).end()
    if not text.startswith("[", position):
        raise NotAList(type(json.loads(text)).__name__)
    position = blank.match(text, position + 1).end()
    if not text.startswith("]", position):
        while True:
            item, position = decoder.raw_decode(text, position)
            yield item
            position = blank.match(text, position).end()
            if text.startswith("]", position):
                break
            if not text.startswith(",", position):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
            position = blank.match(text, position + 1).end()
    position = blank.match(text, position + 1).end()
    if position != len(text):
        raise json.JSONDecodeError("Extra data", text, position)


def foreign_byte_error(record: Any) -> Any:
    """`record`, or a RecordError when it holds a byte that was not UTF-8 (kept as a lone surrogate)."""
    text = json.dumps(record, ensure_ascii=False)
    byte = next((ord(ch) - 0xDC00 for ch in text if "\udc80" <= ch <= "\udcff"), None)
    return record if byte is None else RecordError(f"not UTF-8: holds the byte 0x{byte:02x}; {RE_ENCODE}")
