"""Comparisons on columns: `== != < <= > >=` (per turn: every turn holds), `in`/`not in`, and None."""

from __future__ import annotations

import ast
import functools
import reprlib
from typing import Any

import numpy as np
import pyarrow.compute as pc

from deita_train.selection.expressions.batches import Batch, Operation, align, as_column, fail, fail_all
from deita_train.selection.expressions.row_semantics import COMPARISON_SYMBOLS, COMPARISONS, python_compare
from deita_train.selection.expressions.values import (
    NUMBERS,
    UNSUPPORTED,
    Value,
    any_per_row,
    flat,
    per_row,
    repeat,
    truth,
)

ARROW_COMPARISONS = {ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
                     ast.Gt: pc.greater, ast.GtE: pc.greater_equal}


def is_none(value: Value) -> bool:
    return value.kind == "const" and value.data is None


def compare_rows(batch: Batch, op: type[ast.cmpop], left: Value, right: Value) -> np.ndarray:
    """Python's `left op right` for every row (a per-turn `== != < <= > >=` holds when it holds for every turn)."""
    operation = Operation(functools.partial(python_compare, op),
                          lambda a, b: f"{reprlib.repr(a)} {COMPARISON_SYMBOLS[op]} {reprlib.repr(b)}", (left, right))
    if left.kind == right.kind == "const":
        return truth(operation.constant(batch), len(batch))
    if op in (ast.In, ast.NotIn):
        found = contains(batch, operation, left, right)
        return found if op is ast.In else ~found
    if is_none(left) or is_none(right):
        return none_comparison(batch, operation, op, right if is_none(left) else left)
    a, b, offsets = align(batch, as_column(batch, left, operation), as_column(batch, right, operation), operation)
    holds, bad = compare_items(op, a, b)
    fail(batch, any_per_row(bad, offsets), operation, UNSUPPORTED)
    return holds if offsets is None else per_row(np.logical_and, holds, offsets, True)


def compare_items(op: type[ast.cmpop], a: Value, b: Value) -> tuple[np.ndarray, np.ndarray]:
    """`a op b` item by item for `== != < <= > >=`, and the items that cannot be compared (a string with a number)."""
    items = len(a.data)
    if a.kind in NUMBERS and b.kind in NUMBERS:
        return COMPARISONS[op](a.data, b.data), np.zeros(items, bool)
    if a.kind == b.kind == "str":
        return ARROW_COMPARISONS[op](a.data, b.data).to_numpy(zero_copy_only=False), np.zeros(items, bool)
    if op in (ast.Eq, ast.NotEq):
        return np.full(items, op is ast.NotEq), np.zeros(items, bool)
    return np.zeros(items, bool), np.ones(items, bool)


def none_comparison(batch: Batch, operation: Operation, op: type[ast.cmpop], other: Value) -> np.ndarray:
    """`other == None` / `other != None`: never equal (a per-turn value without turns: every turn holds)."""
    if op not in (ast.Eq, ast.NotEq):
        fail_all(batch, operation, UNSUPPORTED)
    holds = np.full(len(batch), op is ast.NotEq)
    return holds if other.offsets is None else holds | (np.diff(other.offsets) == 0)


def contains(batch: Batch, operation: Operation, needle: Value, haystack: Value) -> np.ndarray:
    """Python's `needle in haystack` for every row."""
    if haystack.kind == "const" and isinstance(haystack.data, list):
        return member_of(batch, operation, needle, haystack.data)
    searchable = needle.offsets is None and not (needle.kind == "const" and isinstance(needle.data, list))
    if haystack.offsets is not None and searchable:
        if is_none(needle):
            return np.zeros(len(batch), bool)
        repeated = repeat(as_column(batch, needle, operation), np.diff(haystack.offsets))
        return per_row(np.logical_or, compare_items(ast.Eq, repeated, flat(haystack))[0], haystack.offsets, False)
    if haystack.kind == "str" and needle.kind == "const" and isinstance(needle.data, str):
        return pc.match_substring(haystack.data, pattern=needle.data).to_numpy(zero_copy_only=False)
    fail_all(batch, operation, UNSUPPORTED)


def member_of(batch: Batch, operation: Operation, needle: Value, items: list[Any]) -> np.ndarray:
    """`needle in items` for a constant list: some item equals the row's value (never a None or a list item)."""
    if needle.offsets is not None:
        fail_all(batch, operation, UNSUPPORTED)
    found = np.zeros(len(batch), bool)
    for item in items:
        if item is not None and not isinstance(item, list):
            found |= compare_items(ast.Eq, needle, as_column(batch, Value("const", item), operation))[0]
    return found
