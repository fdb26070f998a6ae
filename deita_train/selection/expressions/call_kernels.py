"""Calls on columns (`len sum min max abs mean`), indexing, list literals and `not`."""

from __future__ import annotations

import ast
import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_train.selection.expressions.arithmetic_kernels import turn_sums
from deita_train.selection.expressions.batches import Batch, Kernel, Operation, as_column, fail, fail_all
from deita_train.selection.expressions.comparison_kernels import compare_items
from deita_train.selection.expressions.values import (
    INT64,
    INT64_MIN,
    KINDS,
    NUMBERS,
    UNSUPPORTED,
    Value,
    per_row,
    pick,
    string_lengths,
    truth,
)


def arity(batch: Batch, operation: Operation, count: int) -> tuple[Value, ...]:
    """The operands, when there are `count` of them (else every row fails, as in Python)."""
    if len(operation.values) != count:
        fail_all(batch, operation, UNSUPPORTED)
    return operation.values


def len_kernel(batch: Batch, operation: Operation) -> Value:
    (value,) = arity(batch, operation, 1)
    if value.offsets is not None:
        return Value("int", np.diff(value.offsets))
    if value.kind == "str":
        return Value("int", string_lengths(value.data).astype(np.int64))
    fail_all(batch, operation, UNSUPPORTED)


def sum_kernel(batch: Batch, operation: Operation) -> Value:
    (value,) = arity(batch, operation, 1)
    if value.offsets is None:
        fail_all(batch, operation, UNSUPPORTED)
    totals, bad = turn_sums(value)
    fail(batch, bad, operation, INT64)
    return totals


def mean_kernel(batch: Batch, operation: Operation) -> Value:
    (value,) = arity(batch, operation, 1)
    if value.offsets is None:
        if value.kind not in NUMBERS:
            fail_all(batch, operation, UNSUPPORTED)
        return Value("float", value.data.astype(np.float64))
    totals, bad = turn_sums(value)
    fail(batch, bad, operation, INT64)
    with np.errstate(invalid="ignore"):
        return Value("float", totals.data / np.diff(value.offsets))


def abs_kernel(batch: Batch, operation: Operation) -> Value:
    (value,) = arity(batch, operation, 1)
    if value.offsets is not None or value.kind not in NUMBERS:
        fail_all(batch, operation, UNSUPPORTED)
    if value.kind == "float":
        return Value("float", np.abs(value.data))
    integers = value.data.astype(np.int64)
    fail(batch, integers == INT64_MIN, operation, INT64)
    return Value("int", np.abs(integers))


def extreme_kernel(better: type[ast.cmpop], batch: Batch, operation: Operation) -> Value:
    """`min` (`better` is `<`) or `max` (`>`): of one per-turn value's turns, or of two or more values."""
    values = operation.values
    if len(values) == 1 and values[0].offsets is not None:
        return extreme_of_turns(better, batch, operation, values[0])
    if len(values) < 2 or any(v.offsets is not None or isinstance(v.data, list) for v in values):
        fail_all(batch, operation, UNSUPPORTED)
    columns = [as_column(batch, value, operation) for value in values]
    best = columns[0]
    for challenger in columns[1:]:  # Python keeps the first of equal values, and a NaN it started with
        wins, bad = compare_items(better, challenger, best)
        fail(batch, bad, operation, UNSUPPORTED)
        best = choose(wins, challenger, best)
    return best


def choose(mask: np.ndarray, a: Value, b: Value) -> Value:
    """Per item, `a` where `mask` is set, else `b` (numbers promoted)."""
    if a.kind == "str":
        return Value("str", pc.if_else(pa.array(mask), a.data, b.data))
    data = np.where(mask, a.data, b.data)
    return Value(KINDS[data.dtype], data)


def extreme_of_turns(better: type[ast.cmpop], batch: Batch, operation: Operation, value: Value) -> Value:
    """`min`/`max` of each row's turns, as Python's: a NaN first turn stays, later NaNs are passed over."""
    fail(batch, np.diff(value.offsets) == 0, operation, UNSUPPORTED)  # Python: an empty sequence
    if value.kind not in NUMBERS:
        fail_all(batch, operation, UNSUPPORTED)
    exact, skipping_nan = (np.minimum, np.fmin) if better is ast.Lt else (np.maximum, np.fmax)
    if value.kind != "float":
        return Value(value.kind, per_row(exact, value.data, value.offsets, 0))
    first = value.data[value.offsets[:-1]]
    return Value("float", np.where(np.isnan(first), first, per_row(skipping_nan, value.data, value.offsets, 0.0)))


def index_kernel(position: int, batch: Batch, operation: Operation) -> Value:
    """`value[position]`: a turn of a per-turn value, or a character of a string."""
    (value,) = operation.values
    if value.offsets is not None:
        lengths = np.diff(value.offsets)
    elif value.kind == "str":
        lengths = string_lengths(value.data).astype(np.int64)
    else:
        fail_all(batch, operation, UNSUPPORTED)
    if abs(position) > 2**62:
        fail_all(batch, operation, UNSUPPORTED)
    fail(batch, (position >= lengths) | (position < -lengths), operation, UNSUPPORTED)
    if value.offsets is None:
        return Value("str", pc.utf8_slice_codeunits(value.data, position, position + 1 if position != -1 else None))
    turns = value.offsets[:-1] + (lengths + position if position < 0 else position)
    return Value(value.kind, pick(value.data, turns))


def list_kernel(batch: Batch, operation: Operation) -> Value:
    """A list literal reading columns: each row's list of the items' values (numbers promoted)."""
    columns = [as_column(batch, value, operation) for value in operation.values]
    kinds = {column.kind for column in columns}
    if any(column.offsets is not None for column in columns) or ("str" in kinds and len(kinds) > 1):
        fail_all(batch, operation, UNSUPPORTED)
    rows, width = len(batch), len(columns)
    offsets = np.arange(rows + 1, dtype=np.int64) * width
    if kinds == {"str"}:
        order = np.arange(rows * width).reshape(width, rows).T.ravel()
        return Value("str", pa.concat_arrays([column.data for column in columns]).take(pa.array(order)), offsets)
    data = np.stack([column.data for column in columns], axis=1).ravel()
    return Value(KINDS[data.dtype], data, offsets)


def not_kernel(batch: Batch, operation: Operation) -> Value:
    return Value("bool", ~truth(operation.values[0], len(batch)))


CALLS: dict[str, Kernel] = {
    "len": len_kernel,
    "sum": sum_kernel,
    "min": functools.partial(extreme_kernel, ast.Lt),
    "max": functools.partial(extreme_kernel, ast.Gt),
    "abs": abs_kernel,
    "mean": mean_kernel,
}
