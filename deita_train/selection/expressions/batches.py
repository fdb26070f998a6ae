"""The rows being evaluated (`Batch`), one node's `Operation` on them, row failures, and constants meeting columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from deita_train.selection.expressions.columns import column_value
from deita_train.selection.expressions.row_semantics import ROW_ERRORS
from deita_train.selection.expressions.values import (
    COMBINED,
    DTYPES,
    INT64_MIN,
    NUMBERS,
    UNSUPPORTED,
    Value,
    flat,
    repeat,
)


class RowFailure(Exception):
    """A row fails; `row` is its position in the evaluated table."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


@dataclass
class Batch:
    """The rows being evaluated: the referenced columns (nulls removed) and each row's position in the table."""

    arrays: dict[str, pa.Array]
    rows: np.ndarray
    cache: dict[str, Value] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> Value:
        """Column `name` as a Value (read once per batch)."""
        if name not in self.cache:
            value = column_value(self.arrays[name])
            if value is None:
                raise RowFailure(int(self.rows[0]), f"column {name!r} is {self.arrays[name].type}: expressions read "
                                 "numbers, booleans, strings and lists of them")
            self.cache[name] = value
        return self.cache[name]

    def take(self, keep: np.ndarray) -> Batch:
        """The rows flagged in `keep`."""
        if keep.all():
            return self
        mask = pa.array(keep)
        return Batch({name: array.filter(mask) for name, array in self.arrays.items()}, self.rows[keep])

    def head(self, count: int) -> Batch:
        """The first `count` rows."""
        return Batch({name: array.slice(0, count) for name, array in self.arrays.items()}, self.rows[:count])


CONSTANT_BATCH = Batch({}, np.zeros(1, dtype=np.int64))  # one row, no column: where constants are computed


@dataclass(frozen=True)
class Operation:
    """One node's operation on its operands' values: `python` is its Python semantics (constants are computed with
    it, and it gives a failing row's message), `show` writes it with one row's values for other messages."""

    python: Callable[..., Any]
    show: Callable[..., str]
    values: tuple[Value, ...]

    def constant(self, batch: Batch) -> Value:
        """The operation on constant operands, in Python; an error fails the batch's first row."""
        try:
            return Value("const", self.python(*(value.data for value in self.values)))
        except ROW_ERRORS as error:
            raise RowFailure(int(batch.rows[0]), str(error)) from None

    def message(self, row: int, why: str) -> str:
        """Why row `row` fails: Python's error on its values (as a row-by-row evaluation), else `why`."""
        items = [value.item(row) for value in self.values]
        try:
            self.python(*items)
        except ROW_ERRORS as error:
            return str(error)
        return f"{self.show(*items)} {why}"


Kernel = Callable[[Batch, Operation], Value]


def fail(batch: Batch, bad: np.ndarray, operation: Operation, why: str) -> None:
    """Raise `RowFailure` for the first row flagged in `bad`, if any."""
    if bad.any():
        row = int(np.argmax(bad))
        raise RowFailure(int(batch.rows[row]), operation.message(row, why))


def fail_all(batch: Batch, operation: Operation, why: str) -> NoReturn:
    """Raise `RowFailure` for the batch's first row (every row fails)."""
    raise RowFailure(int(batch.rows[0]), operation.message(0, why))


# -- constants meeting columns -------------------------------------------------------------------------------------
def scalar_kind(value: Any) -> str | None:
    """The kind a constant takes in a column, or None (None, lists, integers outside int64)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if INT64_MIN <= value <= np.iinfo(np.int64).max else None
    return {float: "float", str: "str"}.get(type(value))


def constant_items(values: list[Any]) -> Value | None:
    """A flat list of constants as items (numbers promoted bool < int < float), or None if they cannot be."""
    kinds = {scalar_kind(value) for value in values}
    if None in kinds or ("str" in kinds and len(kinds) > 1):
        return None
    if kinds == {"str"}:
        return Value("str", pa.array(values, pa.large_string()))
    kind = max(kinds, key=NUMBERS.index, default="float")
    return Value(kind, np.array(values, dtype=DTYPES[kind]))


def tile(data: Any, times: int) -> Any:
    """A numpy or Arrow array repeated whole `times` times."""
    if isinstance(data, pa.Array):
        return data.take(pa.array(np.tile(np.arange(len(data)), times)))
    return np.tile(data, times)


def as_column(batch: Batch, value: Value, operation: Operation) -> Value:
    """`value` with one item per row; a constant flat list gives every row the same turns."""
    if value.kind != "const":
        return value
    listed = isinstance(value.data, list)
    items = constant_items(value.data if listed else [value.data])
    if items is None:
        fail_all(batch, operation, COMBINED)
    rows = len(batch)
    if not listed:
        return Value(items.kind, tile(items.data, rows))
    return Value(items.kind, tile(items.data, rows), np.arange(rows + 1, dtype=np.int64) * len(value.data))


def align(batch: Batch, left: Value, right: Value, operation: Operation) -> tuple[Value, Value, np.ndarray | None]:
    """Two column values item by item: a per-turn value goes turn by turn (the same number of turns on both sides),
    a one-item-per-row value repeats over the other's turns; and the offsets of the rows (None: one item per row)."""
    if left.offsets is None and right.offsets is None:
        return left, right, None
    if left.offsets is not None and right.offsets is not None:
        fail(batch, np.diff(left.offsets) != np.diff(right.offsets), operation, UNSUPPORTED)
        return flat(left), flat(right), left.offsets
    if left.offsets is not None:
        return flat(left), repeat(right, np.diff(left.offsets)), left.offsets
    return repeat(left, np.diff(right.offsets)), flat(right), right.offsets
