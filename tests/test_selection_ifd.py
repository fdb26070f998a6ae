"""`superfilter`, `cherry`, `threshold`, `top_k`: boundaries of IFD and score rules."""

from __future__ import annotations

import math

from datasets import Dataset

from deita_train.selection.ifd import CherryStrategy, IFDConfig, SuperfilterStrategy
from deita_train.selection.simple import ThresholdConfig, ThresholdStrategy, TopKConfig, TopKStrategy

# rows:      0     1    2    3     4     5    6     7     8     9
IFD = [0.5, 1.0, 0.9, math.nan, None, 0.95, 1.2, 0.5, 0.99, 0.1]
POOL = Dataset.from_dict({"id": list(range(10)), "ifd": [None if v is None else [v] for v in IFD]})


def test_superfilter_keeps_strictly_below_one_descending_nan_dropped():
    picks = SuperfilterStrategy(IFDConfig(budget=100), seed=0).select(POOL)
    assert picks == [8, 5, 2, 0, 7, 9]  # 1.0 and 1.2 out, NaN and null out, ties: lower id first


def test_superfilter_fraction_is_of_the_whole_pool():
    # 0.3 * 10 rows (valid or not) = 3
    assert SuperfilterStrategy(IFDConfig(fraction=0.3), seed=0).select(POOL) == [8, 5, 2]
    assert SuperfilterStrategy(IFDConfig(fraction=0.35), seed=0).select(POOL) == [8, 5, 2]


def test_cherry_keeps_one_and_fraction_is_of_valid_rows():
    assert CherryStrategy(IFDConfig(budget=2), seed=0).select(POOL) == [1, 8]
    # valid: ifd <= 1 and not NaN/null = 7 rows; 0.5 * 7 = 3
    assert CherryStrategy(IFDConfig(fraction=0.5), seed=0).select(POOL) == [1, 8, 5]
    assert CherryStrategy(IFDConfig(fraction=0.5, keep_pool_order=True), seed=0).select(POOL) == [1, 5, 8]


def test_ifd_config_needs_budget_or_fraction():
    assert "select: give exactly one of `budget` (a count) or `fraction`" in IFDConfig().problems("select")
    assert any("exactly one" in p for p in IFDConfig(budget=3, fraction=0.1).problems("select"))
    assert IFDConfig(fraction=1.5).problems("select") == ["select.fraction: must be in (0, 1], got 1.5"]
    assert IFDConfig(budget=3).problems("select") == []


def test_threshold_and_top_k():
    data = Dataset.from_dict({"score": [3.0, None, 5.0, 4.0, 5.0]})
    assert ThresholdStrategy(ThresholdConfig(min=4.0), seed=0).select(data) == [2, 4, 3]
    assert ThresholdStrategy(ThresholdConfig(min=4.0, max=4.5, order="pool"), seed=0).select(data) == [3]
    assert ThresholdStrategy(ThresholdConfig(max=4.0, order="pool", budget=1), seed=0).select(data) == [0]
    assert TopKStrategy(TopKConfig(budget=2), seed=0).select(data) == [2, 4]
    assert ThresholdConfig().problems("select") == ["select: `threshold` needs `min`, `max` or both"]
