"""A small, safe expression language over a row's columns, for `select.filters` and score expressions.

Text is parsed with Python's `ast` (parse only: nothing is ever passed to `eval`/`exec`), every node is
checked against an allow-list, and the tree is turned into plain Python closures. Allowed:

- literals (numbers, strings, booleans, None), lists and tuples of them, column names;
- `and`, `or`, `not`; comparisons `== != < <= > >= in not in` (chains too); `+ - * / // % **`, unary `-`/`+`;
- calls of `len sum min max abs mean`, and the string methods `startswith endswith lower upper strip
  lstrip rstrip`; indexing with an integer literal (`quality[0]`, `quality[-1]`).

Everything else is refused when the text is compiled, naming the expression: attribute access other
than those methods (`x.__class__`), other calls, lambdas, comprehensions, imports (not an
expression at all), names starting with `_`.

Per-turn semantics: arithmetic with a list operand is elementwise (`complexity * quality` multiplies
turn by turn; a scalar broadcasts), so a Deita score is `sum_t c_t * q_t` once the runner sums the list.
A comparison (`== != < <= > >=`) with a list operand holds when it holds for *every* turn:
`quality >= 4` means `min(quality) >= 4`; write `max(quality) >= 4` or `mean(quality) >= 4` for other
rules. `in`/`not in` keep Python's meaning (`5 in quality`: some turn equals 5).

Nulls: a row whose referenced column is null (or a list containing a null) evaluates to `NULL`; a filter
counts it as failed (`null`), a score expression gives NaN (unscored).

Limits, checked before the work is done, so no expression runs unbounded in time or memory:

- an integer `*` or `**` whose result could pass `MAX_INT_BITS` (4096) bits is refused (`9**9**9`);
- a string or list built by `+` or `*` (repetition, concatenation; all turns of a per-turn result together,
  nested items counted) may hold at most `MAX_LENGTH` (100,000) characters/items (`'a' * 10**9`);
- a float overflow (`2.0 ** 10000`, or inf from finite operands) is an error, as is division by zero;
- `%` on a string (printf-style formatting) is refused; `sum` takes one list of numbers (no start value).

A part of the expression that reads no column is computed when the text is compiled, so a limit or error there
is reported then (`deita-train validate`); otherwise it fails on the row, naming the expression and the row id.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import reprlib
from collections.abc import Callable
from typing import Any

import numpy as np

from deita_train.recipe.errors import RecipeError

NULL = None  # what `Expression.evaluate` returns for a row with a null in a referenced column
MAX_INT_BITS = 4096  # most bits an integer `*` or `**` result may have (estimated from the operands before computing)
MAX_LENGTH = 100_000  # most characters/items a string or list built by `+` or `*` may hold (checked before building)

Row = dict[str, Any]
Node = Callable[[Row], Any]
Operator = Callable[[Any, Any], Any]


class ExpressionError(Exception):
    """A problem evaluating one row (wrong types, mismatched per-turn lengths, a limit or an overflow)."""


ROW_ERRORS = (ExpressionError, TypeError, ValueError, ZeroDivisionError, IndexError, OverflowError)


def sum_numbers(values: list[Any]) -> Any:
    """`sum` of a list of numbers, each `+` checked (no start value, so no string or list concatenation)."""
    return functools.reduce(functools.partial(checked, operator.add), values, 0)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "sum": sum_numbers,
    "min": min,
    "max": max,
    "abs": abs,
    "mean": lambda values: float(np.mean(values)),
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
PER_TURN = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)  # with a list operand: holds for every turn


class Expression:
    """A compiled expression. `columns` are the column names it reads.

    Args:
        text: the expression, e.g. `quality >= 4 and not instruction.endswith(':')`.
        key: the recipe key named in errors, e.g. `select.filters.0`.
    """

    def __init__(self, text: str, key: str) -> None:
        self.text = text
        self.key = key
        self.columns: set[str] = set()
        self._reads = 0  # column references compiled so far: a node that adds none is constant
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as error:
            raise RecipeError([f"{key}: {text!r} is not an expression: {error.msg}"]) from None
        self.tree = tree.body
        self._run = self._compile(tree.body)

    def evaluate(self, row: Row) -> Any:
        """The value for one row (a mapping with at least `columns`), or `NULL` if a referenced value is null."""
        for name in self.columns:
            value = row[name]
            if value is None or (isinstance(value, list) and any(v is None for v in value)):
                return NULL
        try:
            return self._run(row)
        except ROW_ERRORS as error:
            raise RecipeError([f"{self.key}: {self.text!r} failed on row {row.get('id', '?')}: {error}"]) from None

    def check_columns(self, available: list[str]) -> None:
        """Refuse names that are not columns of the dataset."""
        from deita_train.registry import did_you_mean

        missing = sorted(self.columns - set(available))
        if missing:
            problems = [f"{self.key}: {self.text!r}: no column {m!r}{did_you_mean(m, available)}" for m in missing]
            raise RecipeError(problems)

    # -- compilation: one closure per allowed node ---------------------------------------------------
    def _refuse(self, node: ast.AST, why: str) -> RecipeError:
        return RecipeError([f"{self.key}: {self.text!r}: {why} (at {ast.unparse(node)!r}) is not allowed"])

    def _compile(self, node: ast.AST) -> Node:
        """`node` as a closure; a node that reads no column is computed now, so its limits and errors are
        reported when the text is compiled."""
        reads = self._reads
        run = self._compile_node(node)
        if self._reads > reads or isinstance(node, ast.Constant):
            return run
        try:
            value = run({})
        except ROW_ERRORS as error:
            where = ast.unparse(node)
            raise RecipeError([f"{self.key}: {self.text!r} cannot be computed (at {where!r}): {error}"]) from None
        return lambda row: value

    def _compile_node(self, node: ast.AST) -> Node:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool | type(None)):
                raise self._refuse(node, f"a {type(node.value).__name__} literal")
            value = node.value
            return lambda row: value
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self._refuse(node, "a private name")
            name = node.id
            self.columns.add(name)
            self._reads += 1
            return lambda row: row[name]
        if isinstance(node, ast.List | ast.Tuple):
            items = [self._compile(item) for item in node.elts]
            return lambda row: [item(row) for item in items]
        if isinstance(node, ast.BoolOp):
            parts = [self._compile(value) for value in node.values]
            if isinstance(node.op, ast.And):
                return lambda row: all(part(row) for part in parts)
            return lambda row: any(part(row) for part in parts)
        if isinstance(node, ast.UnaryOp):
            return self._compile_unary(node)
        if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
            return self._compile_binop(node)
        if isinstance(node, ast.Compare):
            return self._compile_compare(node)
        if isinstance(node, ast.Call):
            return self._compile_call(node)
        if isinstance(node, ast.Subscript):
            return self._compile_subscript(node)
        raise self._refuse(node, f"{type(node).__name__}")

    def _compile_unary(self, node: ast.UnaryOp) -> Node:
        operand = self._compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda row: not operand(row)
        if isinstance(node.op, ast.USub):
            return lambda row: arithmetic(operator.mul, -1, operand(row))
        if isinstance(node.op, ast.UAdd):
            return operand
        raise self._refuse(node, type(node.op).__name__)

    def _compile_binop(self, node: ast.BinOp) -> Node:
        left, right, op = self._compile(node.left), self._compile(node.right), ARITHMETIC[type(node.op)]
        return lambda row: arithmetic(op, left(row), right(row))

    def _compile_compare(self, node: ast.Compare) -> Node:
        operands = [self._compile(node.left), *(self._compile(c) for c in node.comparators)]
        ops = [(type(op) in PER_TURN, COMPARISONS[type(op)]) for op in node.ops]

        def compare(row: Row) -> bool:
            left = operands[0](row)
            for (per_turn, op), right_node in zip(ops, operands[1:], strict=True):
                right = right_node(row)
                if per_turn and (isinstance(left, list) or isinstance(right, list)):
                    holds = all(elementwise(op, left, right))  # every turn must satisfy it
                else:
                    holds = op(left, right)
                if not holds:
                    return False
                left = right
            return True

        return compare

    def _compile_call(self, node: ast.Call) -> Node:
        if node.keywords:
            raise self._refuse(node, "a keyword argument")
        args = [self._compile(arg) for arg in node.args]
        if isinstance(node.func, ast.Name):
            if node.func.id not in FUNCTIONS:
                raise self._refuse(node, f"calling {node.func.id!r} (allowed: {', '.join(sorted(FUNCTIONS))})")
            function = FUNCTIONS[node.func.id]
            return lambda row: function(*(arg(row) for arg in args))
        if isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method not in STRING_METHODS:
                raise self._refuse(node, f"the method {method!r} (allowed: {', '.join(sorted(STRING_METHODS))})")
            receiver = self._compile(node.func.value)

            def call(row: Row) -> Any:
                value = receiver(row)
                if not isinstance(value, str):
                    raise ExpressionError(f".{method}() needs a string, got {type(value).__name__}")
                return getattr(value, method)(*(arg(row) for arg in args))

            return call
        raise self._refuse(node, "this call")

    def _compile_subscript(self, node: ast.Subscript) -> Node:
        try:
            position = ast.literal_eval(node.slice)  # literals only: never evaluates a name or a call
        except ValueError:
            position = None
        if type(position) is not int:
            raise self._refuse(node, "indexing with anything but an integer literal")
        value = self._compile(node.value)
        return lambda row: value(row)[position]


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
    string formatting is refused, and a float overflow is an error."""
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
