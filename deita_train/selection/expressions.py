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
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from deita_train.recipe.errors import RecipeError

NULL = None  # what `Expression.evaluate` returns for a row with a null in a referenced column

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "sum": sum,
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
PER_TURN = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)  # with a list operand: holds for every turn

Row = dict[str, Any]
Node = Callable[[Row], Any]


class ExpressionError(Exception):
    """A problem evaluating one row (wrong types, mismatched per-turn lengths)."""


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
        except (ExpressionError, TypeError, ValueError, ZeroDivisionError, IndexError) as error:
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
            return lambda row: elementwise(operator.mul, -1, operand(row))
        if isinstance(node.op, ast.UAdd):
            return operand
        raise self._refuse(node, type(node.op).__name__)

    def _compile_binop(self, node: ast.BinOp) -> Node:
        left, right, op = self._compile(node.left), self._compile(node.right), ARITHMETIC[type(node.op)]
        return lambda row: elementwise(op, left(row), right(row))

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


def elementwise(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    """`op` on two operands; a list operand applies turn by turn, a scalar broadcasts."""
    left_list, right_list = isinstance(left, list), isinstance(right, list)
    if left_list and right_list:
        if len(left) != len(right):
            raise ExpressionError(f"per-turn lists of different lengths ({len(left)} and {len(right)})")
        return [op(a, b) for a, b in zip(left, right, strict=True)]
    if left_list:
        return [op(a, right) for a in left]
    if right_list:
        return [op(left, b) for b in right]
    return op(left, right)
