"""The safe expression language and `select.filters`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.expressions import MAX_INT_BITS, MAX_LENGTH, NULL, Expression
from deita_train.selection.filters import apply_filters
from deita_train.selection.scores import sample_scores

ROW = {
    "id": 3,
    "quality": [4.5, 5.0],
    "complexity": [2.0, 3.0],
    "length_tokens": 900,
    "instruction": "List three colors:",
    "input_quality": "good",
}


def evaluate(text: str, row: dict[str, Any], key: str = "k") -> Any:
    """`text` compiled with `key` and evaluated on a one-row table of `row` (NULL for a null row)."""
    result = Expression(text, key).evaluate_columns(pa.table({name: [value] for name, value in row.items()}))
    return NULL if result.null[0] else result.value.item(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("min(quality) >= 4", True),
        ("length_tokens < 2048", True),
        ("not instruction.endswith(':')", False),
        ("input_quality in ['good', 'excellent']", True),
        ("input_quality not in ('good',)", False),
        ("mean(quality) > 4.7 and len(instruction) > 3", True),
        ("complexity * quality", [9.0, 15.0]),
        ("sum(complexity * quality) / 2", 12.0),
        ("quality[-1] == 5 or instruction.lower().startswith('x')", True),
        ("-complexity", [-2.0, -3.0]),
        ("1 < length_tokens <= 900", True),
        ("abs(-2) + max(1, 3) ** 2", 11),
        ("instruction.strip().upper().startswith('LIST')", True),
    ],
)
def test_accepts(text, expected):
    assert evaluate(text, ROW, "select.filters.0") == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("instruction.__class__", "Attribute"),
        ("instruction.__class__.__bases__", "Attribute"),
        ("__import__('os')", "calling '__import__'"),
        ("open('x')", "calling 'open'"),
        ("eval('1')", "calling 'eval'"),
        ("instruction.format(1)", "method 'format'"),
        ("(lambda: 1)()", "this call"),
        ("(lambda: 1)", "Lambda"),
        ("[x for x in quality]", "ListComp"),
        ("import os", "not an expression"),
        ("quality['__len__']", "integer literal"),
        ("instruction[length_tokens]", "integer literal"),
        ("len(x=1)", "keyword"),
        ("quality if True else 1", "IfExp"),
        ("_secret > 1", "private name"),
    ],
)
def test_rejects(text, why):
    with pytest.raises(RecipeError) as error:
        Expression(text, "select.filters.2")
    assert "select.filters.2" in str(error.value) and why in str(error.value)


def test_nulls_and_row_errors():
    assert evaluate("quality[0] > 1", {"quality": None}) is NULL
    assert evaluate("quality[0] > 1", {"quality": [None, 2.0]}) is NULL
    assert evaluate("quality > 4.6", ROW) is False  # every turn must pass
    assert evaluate("4 < quality <= 5", ROW) is True
    assert evaluate("quality != 5", ROW) is False
    assert evaluate("5.0 in quality", ROW) is True
    with pytest.raises(RecipeError, match="different lengths"):
        evaluate("quality * complexity", {"quality": [1.0], "complexity": [1.0, 2.0]})
    with pytest.raises(RecipeError, match="needs a string"):
        evaluate("length_tokens.lower()", ROW)


def test_filters_count_each_step_and_nulls():
    data = Dataset.from_dict({
        "id": [0, 1, 2, 3, 4],
        "quality": [[5.0], [3.0], None, [4.0], [4.5]],
        "instruction": ["a", "b:", "c", "d", "e:"],
    })
    positions, steps, failed_at = apply_filters(data, ["quality >= 4", "not instruction.endswith(':')"])
    assert positions.tolist() == [0, 3] and failed_at.tolist() == [-1, 0, 0, -1, 1]  # row 2: its null fails
    assert [(s["kept"], s["failed"], s["null"]) for s in steps] == [(3, 1, 1), (2, 1, 0)]
    with pytest.raises(RecipeError, match="no column 'qualty'"):
        apply_filters(data, ["qualty > 1"])
    with pytest.raises(RecipeError, match="not true/false"):
        apply_filters(data, ["sum(quality)"])


def test_score_expressions_sum_turns_and_give_nan_for_nulls():
    data = Dataset.from_dict({"c": [[1.0, 2.0], None, [3.0]], "q": [[2.0, 2.0], [1.0], [1.0]], "f": [1.0, None, 3.0]})
    np.testing.assert_array_equal(sample_scores(data, "c * q"), [6.0, np.nan, 3.0])
    np.testing.assert_array_equal(sample_scores(data, "f"), [1.0, np.nan, 3.0])
    with pytest.raises(RecipeError, match="not a number"):
        sample_scores(Dataset.from_dict({"s": ["x"]}), "s")


def refused_fast(text: str, row: dict | None = None) -> str:
    """The RecipeError message for `text` (compiled with key `select.filters.0`, then evaluated on a one-row table of
    `row`), asserting it came in under a second: a guard against unbounded work."""
    started = time.perf_counter()
    with pytest.raises(RecipeError) as error:
        evaluate(text, row or {"id": 0}, "select.filters.0")
    assert time.perf_counter() - started < 1.0
    return str(error.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("9**9**9 > 0", ["9 ** 387420489", f"integer limit of {MAX_INT_BITS} bits", "MAX_INT_BITS"]),
        ("len('a' * 10**9) > 0", ["'a' * 1000000000", f"length limit of {MAX_LENGTH}", "MAX_LENGTH"]),
        ("len([[0]] * 10**9) > 0", ["[[0]] * 1000000000", "MAX_LENGTH"]),  # nested list repetition
        ("len(([['x']] * 40000)[0] + 'a' * 90000)", ["+ 'aaa", "MAX_LENGTH"]),  # 40,000 turns of 90,000 characters
        ("2.0 ** 10000 > 0", ["2.0 ** 10000 overflows a float"]),
        ("1e308 * 10 > 0", ["1e+308 * 10 overflows a float"]),  # inf, not an error, in plain Python
        ("1 / 0 > 0", ["division by zero"]),
        ("len('%099999999d' % 1) > 0", ["string formatting with % is not allowed"]),
        ("sum([[0] * 10], [])", ["takes 1 positional argument"]),  # no start value: no list concatenation
    ],
)
def test_limits_on_constants_are_refused_when_compiled(text, words):
    message = refused_fast(text)
    assert message.startswith(f"select.filters.0: {text!r} cannot be computed")
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    ("text", "row", "words"),
    [
        ("x ** 100000 > 0", {"x": 9}, ["9 ** 100000", "integer limit", "MAX_INT_BITS"]),
        ("x * x > 0", {"x": 3 ** 39}, ["4052555153018976267 * 4052555153018976267", "overflows a 64-bit integer"]),
        ("-x > 0", {"x": -2 ** 63}, ["-1 * -9223372036854775808", "overflows a 64-bit integer"]),
        ("len(s * 10**9) > 0", {"s": "ab"}, ["'ab' * 1000000000", "length limit", "MAX_LENGTH"]),
        ("len(s + s) > 0", {"s": "a" * 60_000}, ["+", "length limit", "MAX_LENGTH"]),
        ("len(t + s) > 0", {"t": [" "] * 1000, "s": "a" * 1000}, ["MAX_LENGTH"]),  # all turns together
        ("x ** 10000.0 > 0", {"x": 2}, ["2 ** 10000.0 overflows a float"]),
        ("x * 1e300 > 0", {"x": 1e300}, ["1e+300 * 1e+300 overflows a float"]),
        ("x / y > 0", {"x": 1, "y": 0}, ["division by zero"]),
        ("sum(quality) > 0", {"quality": [1e308, 1e308]}, ["overflows a float"]),
        ("s % 1 == ''", {"s": "%099999999d"}, ["string formatting"]),
    ],
)
def test_limits_on_rows_name_the_expression_and_row(text, row, words):
    message = refused_fast(text, {**row, "id": 7})
    assert message.startswith(f"select.filters.0: {text!r} failed on row 7: ")
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("complexity * quality", [9.0, 15.0]),
        ("quality ** 2", [20.25, 25.0]),
        ("len(instruction) > 10", True),
        ("'ab' * 3 == 'ababab'", True),
        ("instruction + '!' == 'List three colors:!'", True),
        ("len(instruction * 5000) == 90000", True),  # under MAX_LENGTH
        ("2 ** 2000 > 0 and 1 ** 10**100 == 1 and 3 ** -5000 == 0", True),
        ("sum(quality) == 9.5 and sum([]) == 0", True),
    ],
)
def test_normal_expressions_within_limits(text, expected):
    assert evaluate(text, ROW) == expected
