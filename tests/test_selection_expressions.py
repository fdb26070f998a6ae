"""The safe expression language and `select.filters`."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from deita_train.recipe.errors import RecipeError
from deita_train.selection.expressions import NULL, Expression
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
    assert Expression(text, "select.filters.0").evaluate(ROW) == expected


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
    expression = Expression("quality[0] > 1", "select.filters.0")
    assert expression.evaluate({"quality": None}) is NULL
    assert expression.evaluate({"quality": [None, 2.0]}) is NULL
    assert Expression("quality > 4.6", "k").evaluate(ROW) is False  # every turn must pass
    assert Expression("4 < quality <= 5", "k").evaluate(ROW) is True
    assert Expression("quality != 5", "k").evaluate(ROW) is False
    assert Expression("5.0 in quality", "k").evaluate(ROW) is True
    with pytest.raises(RecipeError, match="different lengths"):
        Expression("quality * complexity", "k").evaluate({"quality": [1.0], "complexity": [1.0, 2.0]})
    with pytest.raises(RecipeError, match="needs a string"):
        Expression("length_tokens.lower()", "k").evaluate(ROW)


def test_filters_count_each_step_and_nulls():
    data = Dataset.from_dict({
        "id": [0, 1, 2, 3, 4],
        "quality": [[5.0], [3.0], None, [4.0], [4.5]],
        "instruction": ["a", "b:", "c", "d", "e:"],
    })
    positions, steps = apply_filters(data, ["quality >= 4", "not instruction.endswith(':')"])
    assert positions.tolist() == [0, 3]
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
