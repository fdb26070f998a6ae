"""Python semantics of one row's values (constants are computed with them, failing rows explained) and the bounds."""

from __future__ import annotations

import ast
import functools
import math
import operator
import reprlib
from collections.abc import Callable
from typing import Any

NULL = None  # a row with a null in a referenced column (`ColumnResult.null`); a constant None result is NULL too
MAX_INT_BITS = 4096  # most bits an integer `*` or `**` result may have (estimated from the operands before computing)
MAX_LENGTH = 100_000  # most characters/items a string or list built by `+` or `*` may hold (checked before building)

Operator = Callable[[Any, Any], Any]


class ExpressionError(Exception):
    """A problem evaluating one row (wrong types, mismatched per-turn lengths, a limit or an overflow)."""


ROW_ERRORS = (ExpressionError, TypeError, ValueError, ZeroDivisionError, IndexError, OverflowError)


def sum_numbers(values: list[Any]) -> Any:
    """`sum` of a list of numbers, each `+` checked (no start value, so no string or list concatenation)."""
    return functools.reduce(functools.partial(checked, operator.add), values, 0)


def mean_numbers(values: Any) -> float:
    """`mean` of a list of numbers (the checked `sum` over the count; NaN for an empty list), or of one number."""
    if isinstance(values, bool | int | float):
        return float(values)
    return sum_numbers(values) / len(values) if len(values) else math.nan


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "sum": sum_numbers,
    "min": min,
    "max": max,
    "abs": abs,
    "mean": mean_numbers,
}
STRING_METHODS = frozenset({"startswith", "endswith", "lower", "upper", "strip", "lstrip", "rstrip"})

ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
COMPARISONS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
GROWING = (operator.add, operator.mul)  # the operations that build strings and lists (concatenation, repetition)
SYMBOLS = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
           operator.floordiv: "//", operator.mod: "%", operator.pow: "**"}  # for messages
COMPARISON_SYMBOLS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
                      ast.In: "in", ast.NotIn: "not in"}  # for messages
PER_TURN = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)  # with a list operand: holds for every turn


def python_compare(op: type[ast.cmpop], left: Any, right: Any) -> bool:
    """`left op right`; `== != < <= > >=` with a list operand hold when they hold for every turn."""
    if op in PER_TURN and (isinstance(left, list) or isinstance(right, list)):
        return all(elementwise(COMPARISONS[op], left, right))
    return COMPARISONS[op](left, right)


def python_method(method: str, value: Any, *args: Any) -> Any:
    """`value.method(*args)`, one of STRING_METHODS; `value` must be a string."""
    if not isinstance(value, str):
        raise ExpressionError(f".{method}() needs a string, got {type(value).__name__}")
    return getattr(value, method)(*args)


def turns(left: Any, right: Any) -> list[tuple[Any, Any]]:
    """The operand pairs `op` applies to: a list operand goes turn by turn, a scalar broadcasts."""
    left_list, right_list = isinstance(left, list), isinstance(right, list)
    if left_list and right_list:
        if len(left) != len(right):
            raise ExpressionError(f"per-turn lists of different lengths ({len(left)} and {len(right)})")
        return list(zip(left, right, strict=True))
    if left_list:
        return [(a, right) for a in left]
    if right_list:
        return [(left, b) for b in right]
    return [(left, right)]


def elementwise(op: Operator, left: Any, right: Any) -> Any:
    """`op` on two operands; a list operand applies turn by turn, a scalar broadcasts."""
    results = [op(a, b) for a, b in turns(left, right)]
    return results if isinstance(left, list) or isinstance(right, list) else results[0]


def arithmetic(op: Operator, left: Any, right: Any) -> Any:
    """`op` elementwise, each turn `checked`; refused first if the strings/lists it builds would pass `MAX_LENGTH`."""
    pairs = turns(left, right)
    if op in GROWING and sum(built_length(op, a, b) for a, b in pairs) > MAX_LENGTH:
        raise ExpressionError(f"{describe(op, left, right)} would exceed the length limit of {MAX_LENGTH} "
                              "characters/items (MAX_LENGTH)")
    results = [checked(op, a, b) for a, b in pairs]
    return results if isinstance(left, list) or isinstance(right, list) else results[0]


def checked(op: Operator, left: Any, right: Any) -> Any:
    """`op(left, right)` on two scalars: an integer result over `MAX_INT_BITS` is refused before it is computed,
    string formatting is refused, and a float overflow or a complex result is an error."""
    if isinstance(left, int) and isinstance(right, int) and integer_bits(op, left, right) > MAX_INT_BITS:
        raise ExpressionError(f"{describe(op, left, right)} would exceed the integer limit of {MAX_INT_BITS} bits "
                              "(MAX_INT_BITS)")
    if op is operator.mod and isinstance(left, str):
        raise ExpressionError(f"{describe(op, left, right)}: string formatting with % is not allowed")
    try:
        result = op(left, right)
        overflow = isinstance(result, float) and not math.isfinite(result) and not any(
            isinstance(value, float) and not math.isfinite(value) for value in (left, right))
    except OverflowError:
        overflow = True
    if overflow:
        raise ExpressionError(f"{describe(op, left, right)} overflows a float")
    if isinstance(result, complex):
        raise ExpressionError(f"{describe(op, left, right)} is a complex number")
    return result


def built_length(op: Operator, left: Any, right: Any) -> int:
    """The `size` of the string or list `left + right` or `left * right` would build (0 for numbers)."""
    if op is operator.add:
        return size(left) + size(right)
    if isinstance(left, int) != isinstance(right, int):
        return size(left) * right if isinstance(right, int) else size(right) * left
    return 0


def size(value: Any) -> int:
    """Characters of a string, items of a list (nested ones counted); 0 for anything else."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return len(value) + sum(size(item) for item in value)
    return 0


def integer_bits(op: Operator, left: int, right: int) -> int:
    """An upper bound on the bits of the integer `left * right` or `left ** right` (0 for other operations)."""
    if op is operator.mul:
        return left.bit_length() + right.bit_length()
    if op is operator.pow and abs(left) > 1 and right > 0:
        return left.bit_length() * right
    return 0


def describe(op: Operator, left: Any, right: Any) -> str:
    """`left op right` with long operands shortened, for messages."""
    return f"{reprlib.repr(left)} {SYMBOLS[op]} {reprlib.repr(right)}"


def show_call(name: str) -> Callable[..., str]:
    """How a call of `name` shows in messages, given its arguments."""
    return lambda *args: f"{name}({', '.join(map(reprlib.repr, args))})"
