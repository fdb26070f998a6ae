"""Arithmetic on columns: `+ - * / // % **` item by item in int64/float64 or on Arrow strings, and turn sums."""

from __future__ import annotations

import operator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_train.selection.expressions.batches import Batch, Operation, align, as_column, fail
from deita_train.selection.expressions.row_semantics import GROWING, MAX_LENGTH, Operator
from deita_train.selection.expressions.values import (
    DTYPES,
    INT64,
    NUMBERS,
    UNSUPPORTED,
    Value,
    any_per_row,
    per_row,
    string_lengths,
)

NUMPY_ARITHMETIC = {operator.add: np.add, operator.sub: np.subtract, operator.mul: np.multiply,
                    operator.truediv: np.true_divide, operator.floordiv: np.floor_divide, operator.mod: np.remainder,
                    operator.pow: np.power}


def arithmetic_kernel(op: Operator, batch: Batch, operation: Operation) -> Value:
    """`left op right` for every row (the language's `arithmetic`)."""
    left, right = (as_column(batch, value, operation) for value in operation.values)
    a, b, offsets = align(batch, left, right, operation)
    if op in GROWING and "str" in (a.kind, b.kind):
        built = built_lengths(op, a, b)
        fail(batch, (built if offsets is None else per_row(np.add, built, offsets, 0.0)) > MAX_LENGTH, operation,
             UNSUPPORTED)
    result, bad, why = arithmetic_items(op, a, b)
    fail(batch, any_per_row(bad, offsets), operation, why)
    return Value(result.kind, result.data, offsets)


def built_lengths(op: Operator, a: Value, b: Value) -> np.ndarray:
    """Per item, the characters `a op b` builds (the language's `built_length`), in float64 so nothing wraps."""
    text = [string_lengths(v.data).astype(np.float64) if v.kind == "str" else np.zeros(len(v.data)) for v in (a, b)]
    if op is operator.add:
        return text[0] + text[1]
    if (a.kind in ("bool", "int")) != (b.kind in ("bool", "int")):
        return text[0] * b.data if b.kind in ("bool", "int") else text[1] * a.data
    return np.zeros(len(a.data))


def arithmetic_items(op: Operator, a: Value, b: Value) -> tuple[Value, np.ndarray, str]:
    """`a op b` item by item: the result, the items that fail, and why where Python would not fail."""
    if a.kind in NUMBERS and b.kind in NUMBERS:
        x, y = (v.data.astype(np.int64) if v.kind == "bool" else v.data for v in (a, b))
        if x.dtype == y.dtype == np.int64 and op is not operator.truediv and not (op is operator.pow and (y < 0).any()):
            return integer_items(op, x, y)
        return float_items(op, x.astype(np.float64), y.astype(np.float64))
    if op is operator.add and a.kind == b.kind == "str":
        joined = pc.binary_join_element_wise(a.data, b.data, pa.scalar("", pa.large_string()))
        return Value("str", joined), np.zeros(len(a.data), bool), ""
    if op is operator.mul and sorted((a.kind, b.kind)) in (["int", "str"], ["bool", "str"]):
        text, count = (a, b) if a.kind == "str" else (b, a)
        counts = np.where(string_lengths(text.data) > 0, np.maximum(count.data.astype(np.int64), 0), 0)
        return Value("str", pc.binary_repeat(text.data, pa.array(counts))), np.zeros(len(counts), bool), ""
    items = len(a.data)
    return Value("float", np.zeros(items)), np.ones(items, bool), UNSUPPORTED


def integer_items(op: Operator, x: np.ndarray, y: np.ndarray) -> tuple[Value, np.ndarray, str]:
    """Integer `x op y` in int64. The float64 estimate finds the results outside int64: where the exact result fits,
    the wrapped int64 result is exact and within 2**13 of the estimate; where it does not, they are 2**63 apart."""
    zero = (y == 0) if op in (operator.floordiv, operator.mod) else np.zeros(len(y), bool)
    divisor = np.where(zero, 1, y)
    with np.errstate(all="ignore"):
        result = NUMPY_ARITHMETIC[op](x, divisor)
        estimate = NUMPY_ARITHMETIC[op](x.astype(np.float64), divisor.astype(np.float64))
        outside = (np.abs(estimate) >= 2.0**64) | (np.abs(result.astype(np.float64) - estimate) >= 2.0**63)
    if op is operator.mod:  # |x % y| < |y|: never outside
        outside[:] = False
    return Value("int", result), zero | outside, INT64


def float_items(op: Operator, x: np.ndarray, y: np.ndarray) -> tuple[Value, np.ndarray, str]:
    """Float `x op y`: a result that is not finite from finite operands fails (overflow, division by zero, complex)."""
    with np.errstate(all="ignore"):
        result = NUMPY_ARITHMETIC[op](x, y)
    bad = np.isfinite(x) & np.isfinite(y) & ~np.isfinite(result)
    return Value("float", result), bad, "overflows a float"


def turn_sums(value: Value) -> tuple[Value, np.ndarray]:
    """Each row's turns added in order from 0 (Python's `sum`, each `+` checked), and the rows where that fails."""
    lengths = np.diff(value.offsets)
    if value.kind not in NUMBERS:  # 0 + 'text' fails, a row without turns sums to 0
        return Value("int", np.zeros(len(lengths), np.int64)), lengths > 0
    kind = "float" if value.kind == "float" else "int"
    items = value.data.astype(DTYPES[kind])
    totals, bad = np.zeros(len(lengths), DTYPES[kind]), np.zeros(len(lengths), bool)
    rows, turn = np.arange(len(lengths)), 0
    while len(rows := rows[lengths[rows] > turn]):
        added, failed, _ = arithmetic_items(operator.add, Value(kind, totals[rows]),
                                            Value(kind, items[value.offsets[rows] + turn]))
        totals[rows], bad[rows] = added.data, bad[rows] | failed
        turn += 1
    return Value(kind, totals), bad
