"""`Expression`: text checked against the allow-list and compiled into nodes, evaluated on Arrow tables."""

from __future__ import annotations

import ast
import functools
import operator
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from deita_train.recipe.errors import RecipeError
from deita_train.selection.expressions.arithmetic_kernels import arithmetic_kernel
from deita_train.selection.expressions.batches import CONSTANT_BATCH, Batch, Kernel, Operation, RowFailure, as_column
from deita_train.selection.expressions.call_kernels import CALLS, index_kernel, list_kernel, not_kernel, sum_kernel
from deita_train.selection.expressions.columns import null_rows, readable
from deita_train.selection.expressions.comparison_kernels import compare_rows, is_none
from deita_train.selection.expressions.method_kernels import method_kernel
from deita_train.selection.expressions.row_semantics import (
    ARITHMETIC,
    FUNCTIONS,
    STRING_METHODS,
    Operator,
    arithmetic,
    describe,
    python_method,
    show_call,
    sum_numbers,
)
from deita_train.selection.expressions.values import Value, truth

Node = Callable[[Batch], Value]


def operation_node(python: Callable[..., Any], show: Callable[..., str], kernel: Kernel, operands: list[Node]) -> Node:
    """A node applying `kernel` to its operands' values (`python`, when they are all constants)."""

    def run(batch: Batch) -> Value:
        operation = Operation(python, show, tuple(operand(batch) for operand in operands))
        if all(value.kind == "const" for value in operation.values):
            return operation.constant(batch)
        return kernel(batch, operation)

    return run


@dataclass(frozen=True)
class ColumnResult:
    """An expression's value for every row of a table: `value` holds the rows that are not NULL, in order (None when
    every row is), `null` flags the NULL rows."""

    value: Value | None
    null: np.ndarray


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

    def evaluate_columns(self, table: pa.Table, labels: np.ndarray | None = None, *,
                         total: bool = False) -> ColumnResult:
        """Every row of `table` (holding at least `columns`) at once.

        A failing row raises a RecipeError naming the expression and the first failing row: its `id` where `table`
        has that column, else its label in `labels` (default: its position). `total`: a per-turn result is summed
        over its turns (`sum`), as a score is."""
        arrays = {name: readable(table.column(name)) for name in self.columns}
        null = null_rows(arrays, table.num_rows)
        present = ~null
        batch = Batch({name: array.filter(pa.array(present)) for name, array in arrays.items()} if null.any()
                      else arrays, np.flatnonzero(present))
        if not len(batch):
            return ColumnResult(None, null)
        try:
            value = self._value(batch, total)
        except RowFailure as failure:
            first = self._first_failure(batch, failure, total)
            name = table.column("id")[first.row].as_py() if "id" in table.column_names else (
                first.row if labels is None else labels[first.row])
            raise RecipeError([f"{self.key}: {self.text!r} failed on row {name}: {first}"]) from None
        return ColumnResult(None, np.ones(len(null), bool)) if value is None else ColumnResult(value, null)

    def check_columns(self, available: list[str]) -> None:
        """Refuse names that are not columns of the dataset."""
        from deita_train.registry import did_you_mean

        missing = sorted(self.columns - set(available))
        if missing:
            problems = [f"{self.key}: {self.text!r}: no column {m!r}{did_you_mean(m, available)}" for m in missing]
            raise RecipeError(problems)

    def _value(self, batch: Batch, total: bool) -> Value | None:
        """The expression over `batch`, one item (or per-turn list) per row; None for a constant None (NULL)."""
        value = self._run(batch)
        if is_none(value):
            return None
        value = as_column(batch, value, Operation(lambda item: item, reprlib.repr, (value,)))
        if total and value.offsets is not None:
            value = sum_kernel(batch, Operation(sum_numbers, show_call("sum"), (value,)))
        return value

    def _first_failure(self, batch: Batch, failure: RowFailure, total: bool) -> RowFailure:
        """The failure of the first failing row in table order: the rows before a failing one are evaluated again
        until none of them fails (each node reports its own first failing row, not necessarily the table's)."""
        while (before := int(np.searchsorted(batch.rows, failure.row))) > 0:
            try:
                self._value(batch.head(before), total)
            except RowFailure as earlier:
                failure = earlier
            else:
                break
        return failure

    # -- compilation: one node per allowed AST node ----------------------------------------------------------------
    def _refuse(self, node: ast.AST, why: str) -> RecipeError:
        return RecipeError([f"{self.key}: {self.text!r}: {why} (at {ast.unparse(node)!r}) is not allowed"])

    def _compile(self, node: ast.AST) -> Node:
        """`node` as a function of a batch; a node that reads no column is computed now (in Python), so its limits
        and errors are reported when the text is compiled."""
        reads = self._reads
        run = self._compile_node(node)
        if self._reads > reads or isinstance(node, ast.Constant):
            return run
        try:
            value = run(CONSTANT_BATCH)
        except RowFailure as failure:
            where = ast.unparse(node)
            raise RecipeError([f"{self.key}: {self.text!r} cannot be computed (at {where!r}): {failure}"]) from None
        constant = value if value.kind == "const" else Value("const", value.item(0))
        return lambda batch: constant

    def _compile_node(self, node: ast.AST) -> Node:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool | type(None)):
                raise self._refuse(node, f"a {type(node.value).__name__} literal")
            value = Value("const", node.value)
            return lambda batch: value
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self._refuse(node, "a private name")
            name = node.id
            self.columns.add(name)
            self._reads += 1
            return lambda batch: batch.column(name)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self._compile(item) for item in node.elts]
            return operation_node(lambda *values: list(values), lambda *values: reprlib.repr(list(values)),
                                  list_kernel, items)
        if isinstance(node, ast.BoolOp):
            return self._compile_boolop(node)
        if isinstance(node, ast.UnaryOp):
            return self._compile_unary(node)
        if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
            return self._arithmetic(ARITHMETIC[type(node.op)], [self._compile(node.left), self._compile(node.right)])
        if isinstance(node, ast.Compare):
            return self._compile_compare(node)
        if isinstance(node, ast.Call):
            return self._compile_call(node)
        if isinstance(node, ast.Subscript):
            return self._compile_subscript(node)
        raise self._refuse(node, f"{type(node).__name__}")

    @staticmethod
    def _arithmetic(op: Operator, operands: list[Node]) -> Node:
        return operation_node(functools.partial(arithmetic, op), functools.partial(describe, op),
                              functools.partial(arithmetic_kernel, op), operands)

    def _compile_boolop(self, node: ast.BoolOp) -> Node:
        parts = [self._compile(value) for value in node.values]
        conjunction = isinstance(node.op, ast.And)

        def run(batch: Batch) -> Value:  # a row is decided by its first false part (`and`) or true part (`or`)
            result, undecided = np.full(len(batch), conjunction), np.arange(len(batch))
            for part in parts:
                decided = truth(part(batch), len(batch)) != conjunction
                result[undecided[decided]] = not conjunction
                undecided, batch = undecided[~decided], batch.take(~decided)
                if not len(undecided):
                    break
            return Value("bool", result)

        return run

    def _compile_unary(self, node: ast.UnaryOp) -> Node:
        operand = self._compile(node.operand)
        if isinstance(node.op, ast.Not):
            return operation_node(operator.not_, lambda value: f"not {reprlib.repr(value)}", not_kernel, [operand])
        if isinstance(node.op, ast.USub):
            minus_one = Value("const", -1)
            return self._arithmetic(operator.mul, [lambda batch: minus_one, operand])
        if isinstance(node.op, ast.UAdd):
            return operand
        raise self._refuse(node, type(node.op).__name__)

    def _compile_compare(self, node: ast.Compare) -> Node:
        operands = [self._compile(node.left), *(self._compile(c) for c in node.comparators)]
        ops = [type(op) for op in node.ops]

        def run(batch: Batch) -> Value:  # a row stops at its first comparison that does not hold
            result, holding, left = np.zeros(len(batch), bool), np.arange(len(batch)), operands[0](batch)
            for op, operand in zip(ops, operands[1:], strict=True):
                right = operand(batch)
                holds = compare_rows(batch, op, left, right)
                holding, batch, left = holding[holds], batch.take(holds), right.take(holds)
                if not len(holding):
                    break
            result[holding] = True
            return Value("bool", result)

        return run

    def _compile_call(self, node: ast.Call) -> Node:
        if node.keywords:
            raise self._refuse(node, "a keyword argument")
        args = [self._compile(arg) for arg in node.args]
        if isinstance(node.func, ast.Name):
            name = node.func.id
            if name not in FUNCTIONS:
                raise self._refuse(node, f"calling {name!r} (allowed: {', '.join(sorted(FUNCTIONS))})")
            return operation_node(FUNCTIONS[name], show_call(name), CALLS[name], args)
        if isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method not in STRING_METHODS:
                raise self._refuse(node, f"the method {method!r} (allowed: {', '.join(sorted(STRING_METHODS))})")
            receiver = self._compile(node.func.value)
            return operation_node(functools.partial(python_method, method),
                                  lambda value, *values: f"{reprlib.repr(value)}.{show_call(method)(*values)}",
                                  functools.partial(method_kernel, method), [receiver, *args])
        raise self._refuse(node, "this call")

    def _compile_subscript(self, node: ast.Subscript) -> Node:
        try:
            position = ast.literal_eval(node.slice)  # literals only: never evaluates a name or a call
        except ValueError:
            position = None
        if type(position) is not int:
            raise self._refuse(node, "indexing with anything but an integer literal")
        return operation_node(operator.itemgetter(position), lambda value: f"{reprlib.repr(value)}[{position}]",
                              functools.partial(index_kernel, position), [self._compile(node.value)])
