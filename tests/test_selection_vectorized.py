"""The vectorized expressions equal a row-by-row reference: values, NULLs, and the first failing row's error."""

from __future__ import annotations

import ast
import math
import operator
import random
import re
import reprlib
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.expressions import (
    ARITHMETIC,
    FUNCTIONS,
    INT64,
    NULL,
    ROW_ERRORS,
    Expression,
    ExpressionError,
    arithmetic,
    describe,
    python_compare,
    python_method,
)
from deita_train.selection.filters import apply_filters
from deita_train.selection.scores import embedding_matrix, sample_scores


# -- the reference: the language's Python semantics, one row at a time -------------------------------------------------
def reference(expression: Expression, row: dict[str, Any]) -> Any:
    """`expression` on one row: NULL for a null referenced value, else its value; a RecipeError naming the row."""
    for name in expression.columns:
        if row[name] is None or (isinstance(row[name], list) and any(item is None for item in row[name])):
            return NULL
    try:
        return python_value(expression.tree, row)
    except ROW_ERRORS as error:
        raise RecipeError([f"{expression.key}: {expression.text!r} failed on row {row['id']}: {error}"]) from None


def python_value(node: ast.AST, row: dict[str, Any]) -> Any:  # noqa: PLR0911 - one case per node
    """`node` on `row` in Python; integers read from columns stay within int64 (as the language documents)."""
    reads = any(isinstance(child, ast.Name) for child in ast.walk(node))
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Name(id=name):
            return row[name]
        case ast.List(elts=items) | ast.Tuple(elts=items):
            return [python_value(item, row) for item in items]
        case ast.BoolOp(op=op, values=parts):
            test = all if isinstance(op, ast.And) else any
            return test(python_value(part, row) for part in parts)
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return not python_value(operand, row)
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return python_value(operand, row)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            value = python_value(operand, row)
            return int64(arithmetic(operator.mul, -1, value), reads, describe(operator.mul, -1, value))
        case ast.BinOp(left=left, op=op, right=right):
            a, b = python_value(left, row), python_value(right, row)
            function = ARITHMETIC[type(op)]
            return int64(arithmetic(function, a, b), reads, describe(function, a, b))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            value = python_value(left, row)
            for op, comparator in zip(ops, comparators, strict=True):
                right = python_value(comparator, row)
                if not python_compare(type(op), value, right):
                    return False
                value = right
            return True
        case ast.Call(func=ast.Name(id=name), args=args):
            values = [python_value(arg, row) for arg in args]
            shown = f"{name}({', '.join(map(reprlib.repr, values))})"
            result = FUNCTIONS[name](*values)
            if name in ("sum", "mean") and isinstance(values[0], list):
                running = 0
                for item in values[0]:
                    running = int64(running + item, reads, shown)
            return int64(result, reads, shown)
        case ast.Call(func=ast.Attribute(value=receiver, attr=method), args=args):
            return python_method(method, python_value(receiver, row), *(python_value(arg, row) for arg in args))
        case ast.Subscript(value=value, slice=position):
            return python_value(value, row)[ast.literal_eval(position)]
    raise AssertionError(ast.dump(node))


def int64(result: Any, reads: bool, shown: str) -> Any:
    """`result`, refused like the vectorized path when it reads a column and holds an integer outside int64."""
    items = result if isinstance(result, list) else [result]
    if reads and any(type(item) is int and not -(2**63) <= item < 2**63 for item in items):
        raise ExpressionError(f"{shown} {INT64}")
    return result


def same(a: Any, b: Any) -> bool:
    """Equal values (floats within a few ulps: numpy's `power` may differ from Python's in the last bit)."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, str | type(None)) or isinstance(b, str | type(None)):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-14)
    return a == b


def worded(message: str) -> str:
    """`message` with the words naming a number's type made one: a number's int or float type may differ where the
    values are equal (`sum` of no float turns is 0.0 where Python's `sum([])` is 0; a list literal of ints and floats
    holds floats), and Python's messages name it (`'str' and 'int'`, `integer division or modulo by zero`)."""
    message = re.sub(r"'(int|float)'", "'number'", message)
    return re.sub(r"integer division or modulo by zero|integer modulo by zero|float floor division by zero|"
                  r"float modulo|float division by zero", "division by zero", message)


def outcome(expression: Expression, table: pa.Table, rows: list[dict[str, Any]]) -> tuple[str, Any]:
    """('values', one value or NULL per row) or ('error', message), vectorized and by the reference."""
    try:
        result = expression.evaluate_columns(table)
    except RecipeError as error:
        vectorized: tuple[str, Any] = ("error", str(error))
    else:
        present = iter(range(int((~result.null).sum())))
        vectorized = ("values", [NULL if null else result.value.item(next(present)) for null in result.null])
    try:
        return vectorized, ("values", [reference(expression, row) for row in rows])
    except RecipeError as error:
        return vectorized, ("error", str(error))


def assert_same(expression: Expression, table: pa.Table, rows: list[dict[str, Any]]) -> str:
    """Assert the vectorized outcome equals the reference's; returns its kind."""
    vectorized, expected = outcome(expression, table, rows)
    assert vectorized[0] == expected[0], (expression.text, vectorized, expected)
    if expected[0] == "error":
        assert worded(vectorized[1]) == worded(expected[1]), expression.text
    else:
        for got, want, row in zip(vectorized[1], expected[1], rows, strict=True):
            assert same(got, want), (expression.text, row, got, want)
    return expected[0]


# -- the table: float, int, bool, string, per-turn list columns with nulls, empty lists, nulls inside, other lengths --
STRINGS = ["List three colors:", "", "  pad  ", "straße", "ΟΔΟΣ ΣΑΣ", "İstanbul", "a\x1cb\u3000", "😀 ok", "x",
           "Abc:", "ab", "ﬁne", None]


def pool(rows: int = 48, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def maybe(value: Any, null: float = 0.1) -> Any:
        return None if rng.random() < null else value

    def turns(values: list[Any], longest: int = 3) -> list[Any]:
        return [rng.choice(values) for _ in range(rng.randint(0, longest))]

    records = []
    for i in range(rows):
        quality = turns([-2.5, 0.0, 1.5, 3.0, 4.25, 4.5, 5.0, 7.0])
        if rng.random() < 0.05:
            quality.append(None)
        complexity = [rng.choice([1.0, 2.0, 0.5, -1.5]) for _ in quality] if rng.random() < 0.85 else turns([1.0, 2.0])
        records.append({
            "id": 100 + i,
            "f": maybe(rng.choice([-2.5, 0.0, 0.5, 1.5, 3.0, 4.25, 7.0, -0.5])),
            "i": maybe(rng.randint(-3, 9)),
            "b": maybe(rng.random() < 0.5),
            "s": rng.choice(STRINGS),
            "q": maybe(quality),
            "c": maybe(complexity),
            "n": maybe(turns([-2, 0, 1, 3, 5])),
            "t": maybe(turns(["a", "ab", "", "Ünï"], 2)),
        })
    return records


SCHEMA = pa.schema({"id": pa.int64(), "f": pa.float64(), "i": pa.int64(), "b": pa.bool_(), "s": pa.string(),
                    "q": pa.list_(pa.float64()), "c": pa.list_(pa.float64()), "n": pa.list_(pa.int64()),
                    "t": pa.list_(pa.string())})


def as_table(rows: list[dict[str, Any]], chunks: int = 3) -> pa.Table:
    """`rows` as an Arrow table of several chunks."""
    size = -(-len(rows) // chunks)
    return pa.Table.from_batches([pa.RecordBatch.from_pylist(rows[start:start + size], schema=SCHEMA)
                                  for start in range(0, len(rows), size)])


ROWS = pool()
TABLE = as_table(ROWS)


# -- random expressions over those columns ---------------------------------------------------------------------------
SUFFIXES = ["s", "'x'", "t[0]"]


class Grammar:
    """Random expressions of the language, typed so that most of them compute (the others fail on some row)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, depth: int, leaves: list[str], composites: list[Any]) -> str:
        if depth <= 0 or self.rng.random() < 0.35:
            return self.rng.choice(leaves)
        return self.rng.choice(composites)(depth - 1)

    def number(self, depth: int) -> str:
        return self.pick(depth, ["f", "i", "2", "0.5", "-3", "len(s)", "len(q)", "q[0]", "n[-1]", "sum(q)", "sum(n)",
                                 "mean(q)", "min(q)", "max(n)", "b"], [
            lambda d: f"({self.number(d)} {self.rng.choice(['+', '-', '*', '/', '//', '%'])} {self.number(d)})",
            lambda d: f"({self.number(d)}) ** {self.rng.choice(['2', '3', '0.5', '-1'])}",
            lambda d: f"-{self.number(d)}",
            lambda d: f"abs({self.number(d)})",
            lambda d: f"{self.rng.choice(['min', 'max'])}({self.number(d)}, {self.number(d)})",
            lambda d: f"{self.rng.choice(['sum', 'mean', 'min', 'max', 'len'])}({self.turns(d)})",
            lambda d: f"{self.turns(d)}[{self.rng.choice(['0', '-1', '1'])}]",
            lambda d: f"len({self.string(d)})",
        ])

    def turns(self, depth: int) -> str:
        return self.pick(depth, ["q", "c", "n", "[f, 1]", "[i, f, 2]", "[1.5, 4.5]"], [
            lambda d: f"({self.turns(d)} {self.rng.choice(['+', '-', '*', '/', '%'])} {self.number(d)})",
            lambda d: f"({self.number(d)} {self.rng.choice(['+', '*', '-'])} {self.turns(d)})",
            lambda d: f"({self.turns(d)} {self.rng.choice(['+', '-', '*'])} {self.turns(d)})",
            lambda d: f"-{self.turns(d)}",
            lambda d: f"[{self.number(d)}, {self.number(d)}]",
        ])

    def string(self, depth: int) -> str:
        return self.pick(depth, ["s", "t[0]", "'ab'", "t[-1]"], [
            lambda d: f"{self.string(d)}.{self.rng.choice(['lower()', 'upper()', 'strip()', 'lstrip()', 'rstrip()'])}",
            lambda d: f"{self.string(d)}.{self.rng.choice(['lstrip', 'rstrip', 'strip'])}('La:')",
            lambda d: f"({self.string(d)} + {self.rng.choice(SUFFIXES)})",
            lambda d: f"({self.string(d)} * {self.rng.choice(['2', '0', '-1', 'b'])})",
            lambda d: f"{self.string(d)}[{self.rng.choice(['0', '-1', '2'])}]",
            lambda d: f"{self.rng.choice(['min', 'max'])}({self.string(d)}, {self.string(d)})",
        ])

    def boolean(self, depth: int) -> str:
        comparison = self.rng.choice(["==", "!=", "<", "<=", ">", ">="])
        return self.pick(depth, ["b", "q >= 4", "s.endswith(':')", "'a' in s", "i in [1, 2.0, 'x', None]"], [
            lambda d: f"{self.number(d)} {comparison} {self.number(d)}",
            lambda d: f"{self.turns(d)} {comparison} {self.number(d)}",
            lambda d: f"{self.turns(d)} {comparison} {self.turns(d)}",
            lambda d: f"{self.string(d)} {comparison} {self.string(d)}",
            lambda d: f"{self.string(d)} {comparison} {self.number(d)}",
            lambda d: f"{self.string(d)}.{self.rng.choice(['startswith', 'endswith'])}({self.rng.choice(STRINGS[:-1])!r})",
            lambda d: f"{self.rng.choice(['1.5', '5', '0', 'i', 'f'])} {self.rng.choice(['in', 'not in'])} {self.turns(d)}",
            lambda d: f"{self.rng.choice(['s', 't[0]'])} in t",
            lambda d: f"{self.string(d)} in ['x', '', 'straße', 1]",
            lambda d: f"not {self.boolean(d)}",
            lambda d: f"({self.boolean(d)} {self.rng.choice(['and', 'or'])} {self.boolean(d)})",
            lambda d: f"{self.number(d)} < {self.number(d)} <= {self.number(d)}",
            lambda d: f"{self.rng.choice(['q', 's', 'i', 't'])} {self.rng.choice(['==', '!='])} None",
        ])


RANDOM = [Grammar(seed).boolean(4) if seed % 3 else Grammar(seed).number(4) for seed in range(600)]
RANDOM += [Grammar(seed).turns(3) for seed in range(600, 800)] + [Grammar(seed).string(3) for seed in range(800, 900)]

FIXED = [  # the expressions of test_selection_expressions.py, on this table's columns
    "min(q) >= 4", "i < 2048", "not s.endswith(':')", "s in ['good', 'excellent', 'x']", "s not in ('x',)",
    "mean(q) > 4.7 and len(s) > 3", "c * q", "sum(c * q) / 2", "q[-1] == 5 or s.lower().startswith('x')", "-c",
    "1 < i <= 9", "abs(-2) + max(1, 3) ** 2", "s.strip().upper().startswith('LIST')", "q > 4.6", "4 < q <= 5",
    "q != 5", "5.0 in q", "q * c", "i.lower()", "q ** 2", "len(s) > 10", "'ab' * 3 == 'ababab'", "s + '!' == 'x!'",
    "len(s * 5000) > 0", "sum(q) == 9.5 and sum([]) == 0", "len(s * 10**9) > 0", "len(t + s) > 0",
    "i ** 100000 > 0", "f * 1e300 * 1e300 > 0", "i / f > 0", "i // (i - i) > 0", "i % 0 > 0", "s % 1 == ''",
    "f ** 0.5", "(-8) ** f", "sum(t)", "mean(t)", "max(q) - min(q)", "min(n)", "sum(n) * 3", "mean(n)",
    "len(q) > 0 and q[0] > 1", "len(q) == 0 or q[0] > 1", "q[0] > 1 and len(q) > 0", "q[1]", "t[0] + s",
    "s[0] == s[-1]", "s * i", "s * f", "max(s, 'b')", "min(i, f)", "max(b, i)", "[s, 'x']", "[i, b]", "b + b",
    "-b", "b * 3", "b and s", "not t", "q or 1", "i // 2 % 3 - -i",
]


def compiled(text: str) -> Expression | None:
    """`text` compiled, or None when a part that reads no column fails when compiled (in Python, as before)."""
    try:
        return Expression(text, "select.filters.0")
    except RecipeError as error:
        assert "cannot be computed" in str(error), error
        return None


@pytest.mark.parametrize("text", FIXED + RANDOM)
def test_vectorized_equals_the_row_by_row_reference(text):
    expression = compiled(text)
    if expression is not None:
        assert_same(expression, TABLE, ROWS)


def test_random_expressions_cover_values_and_errors():
    expressions = [expression for text in RANDOM if (expression := compiled(text)) is not None]
    kinds = [outcome(expression, TABLE, ROWS)[1][0] for expression in expressions]
    assert len(expressions) > 0.9 * len(RANDOM) and 0.3 < kinds.count("values") / len(kinds) < 0.95


@pytest.mark.parametrize(("text", "rows", "words"), [
    ("q * c", [{"id": 5, "q": [1.0], "c": [1.0, 2.0]}], ["row 5", "per-turn lists of different lengths (1 and 2)"]),
    ("q[2]", [{"id": 1, "q": [1.0, 2.0, 3.0]}, {"id": 9, "q": [1.0]}], ["row 9", "list index out of range"]),
    ("min(q)", [{"id": 3, "q": [1.0]}, {"id": 4, "q": []}], ["row 4", "empty"]),
    ("i * i", [{"id": 2, "i": 3**39}], ["row 2", "overflows a 64-bit integer"]),
    ("sum(n)", [{"id": 3, "n": [2**62, 2**62]}], ["row 3", "sum([4611686018427387904, 4611686018427387904])",
                                                  "overflows a 64-bit integer"]),
    ("abs(i)", [{"id": 8, "i": -(2**63)}], ["row 8", "abs(-9223372036854775808) overflows a 64-bit integer"]),
    ("i + 2**70", [{"id": 6, "i": 1}], ["row 6", "1180591620717411303424", "cannot be combined with columns"]),
    ("min(t) == 'a'", [{"id": 7, "t": ["b", "a"]}], ["row 7", "min(['b', 'a']) is not supported on columns"]),
    ("s in 'abc'", [{"id": 1, "s": "b"}], ["row 1", "'b' in 'abc' is not supported on columns"]),
    ("len(m) > 0", [{"id": 1, "m": {"a": 1}}], ["row 1", "column 'm' is struct<a: int64>"]),
])
def test_errors_name_the_key_text_and_first_failing_row(text, rows, words):
    with pytest.raises(RecipeError) as error:
        Expression(text, "select.filters.3").evaluate_columns(pa.Table.from_pylist(rows))
    message = str(error.value)
    assert message.startswith(f"select.filters.3: {text!r} failed on ")
    assert all(word in message for word in words), message


def test_the_first_failing_row_wins_across_nodes():
    rows = [{"id": 10, "q": [1.0], "i": 1}, {"id": 11, "q": [], "i": 1}, {"id": 12, "q": [1.0], "i": 0}]
    table = pa.Table.from_pylist(rows)
    for text in ["1 / i > 0 and q[0] > 0", "q[0] > 0 and 1 / i > 0", "(1 / i) + q[0]", "q[0] + (1 / i)"]:
        expression = Expression(text, "k")
        assert outcome(expression, table, rows)[0] == outcome(expression, table, rows)[1], text
    without_ids = pa.table({"q": [[1.0], []]})
    with pytest.raises(RecipeError, match="failed on row 41: list index out of range"):
        Expression("q[0]", "k").evaluate_columns(without_ids, labels=np.array([40, 41]))
    with pytest.raises(RecipeError, match="failed on row 1: list index out of range"):
        Expression("q[0]", "k").evaluate_columns(without_ids)


def test_case_mapping_and_whitespace_are_pythons():
    texts = ["straße", "ΟΔΟΣ ΣΑΣ", "İstanbul", "ﬁne ǅ", "\x1c\x85 a\u3000\u200b", "ŉ ǰ ΐ", "plain"]
    table = pa.table({"s": texts})
    for method in ["lower", "upper", "strip", "lstrip", "rstrip"]:
        value = Expression(f"s.{method}()", "k").evaluate_columns(table).value
        assert [value.item(i) for i in range(len(texts))] == [getattr(text, method)() for text in texts], method
    value = Expression("len(s)", "k").evaluate_columns(table).value
    assert value.data.tolist() == [len(text) for text in texts]


def test_scores_and_filters_equal_the_reference_on_a_dataset():
    dataset = Dataset(TABLE).select(range(len(ROWS) - 1, -1, -1))  # an indices mapping: rows in reverse
    rows = ROWS[::-1]
    for text in ["c * q", "q * 2 - f", "sum(q) + f", "f", "i", "b", "mean(n) * 2", "len(s)", "[f, i]", "1.5", "None"]:
        expression = Expression(text, "select.score")
        try:
            totals = [reference(expression, row) for row in rows]
        except RecipeError as error:
            with pytest.raises(RecipeError) as raised:
                sample_scores(dataset, text)
            assert str(raised.value) == str(error)
            continue
        totals = [math.nan if v is None else float(sum(v) if isinstance(v, list) else v) for v in totals]
        np.testing.assert_array_equal(sample_scores(dataset, text), totals, err_msg=text)
    filters = ["q >= 1.5", "not s.endswith(':')", "len(t) < 2 and i != 3"]
    positions, steps, _ = apply_filters(dataset, filters)
    kept = list(range(len(rows)))
    for text, step in zip(filters, steps, strict=True):
        expression = Expression(text, "k")
        values = [reference(expression, rows[k]) for k in kept]
        assert (step["kept"], step["null"]) == (sum(v is True for v in values), sum(v is None for v in values))
        kept = [k for k, v in zip(kept, values, strict=True) if v is True]
    assert positions.tolist() == kept


def test_score_and_filter_errors_name_the_row_id():
    dataset = Dataset.from_dict({"id": [7, 8, 9], "q": [[1.0], [1e308, 1e308], [2.0]], "s": ["a", "b", "c"]})
    with pytest.raises(RecipeError, match=r"select.score: 'q \* 2' failed on row 8: .* overflows a float"):
        sample_scores(dataset, "q * 2")
    with pytest.raises(RecipeError, match=r"select.filters.0: 'q\[1\] > 0' failed on row 7: list index out of range"):
        apply_filters(dataset, ["q[1] > 0"])
    with pytest.raises(RecipeError, match="select.filters.1: 's' gives 'b', not true/false"):
        apply_filters(dataset, ["len(q) == 2", "s"])
    with pytest.raises(RecipeError, match=r"gives a str, not a number \(row 0\)"):
        sample_scores(dataset, "s")


@pytest.mark.parametrize("kind", [pa.list_(pa.float32(), 3), pa.list_(pa.float64()), pa.large_list(pa.int32())])
def test_embedding_matrix_reads_vector_columns(kind):
    vectors = [[1, 2, 3], None, [4, 5, 6], [7, 8, 9]]
    table = pa.Table.from_batches([pa.RecordBatch.from_pydict({"e": pa.array(part, kind)})
                                   for part in (vectors[:2], vectors[2:])])
    matrix, valid = embedding_matrix(Dataset(table), "e")
    assert matrix.dtype == np.float32 and matrix.flags.writeable and valid.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    with pytest.raises(RecipeError, match="lengths 1..2"):
        embedding_matrix(Dataset.from_dict({"e": [[1.0], [1.0, 2.0]]}), "e")
    with pytest.raises(RecipeError, match="NaN inside a vector"):
        embedding_matrix(Dataset(pa.table({"e": pa.array([[1.0, None]], pa.list_(pa.float32(), 2))})), "e")
