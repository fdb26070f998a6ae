"""The select stage end to end: filters, strategy, `selected/`, `selection.json`, `report/`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from deita_train.recipe.errors import RecipeError
from deita_train.selection.runner import select
from deita_train.selection.section import parse_select


def scored_pool(n: int = 60) -> Dataset:
    rng = np.random.default_rng(0)
    turns = rng.integers(1, 3, size=n)
    return Dataset.from_dict({
        "id": list(range(n)),
        "instruction": [f"task {i}" + (":" if i % 7 == 0 else "") for i in range(n)],
        "complexity": [rng.uniform(1, 6, size=t).tolist() for t in turns],
        "quality": [None if i % 11 == 5 else rng.uniform(1, 6, size=t).tolist() for i, t in enumerate(turns)],
        "length_tokens": rng.integers(10, 3000, size=n).tolist(),
        "embedding": rng.normal(size=(n, 16)).tolist(),
    })


def test_runner_writes_selection_in_order_with_counts(tmp_path):
    pool = scored_pool()
    problems: list[str] = []
    config = parse_select(
        {"strategy": "deita", "budget": 10, "threshold": 0.5,
         "filters": ["length_tokens < 2048", "not instruction.endswith(':')"]},
        problems,
    )
    assert problems == []
    selected, summary = select(pool, config, seed=0, output_dir=tmp_path)

    written = load_from_disk(str(tmp_path / "selected"))
    assert written.column_names == pool.column_names
    assert written["id"] == selected["id"] and len(written) == 10
    scores = [sum(c * q for c, q in zip(r["complexity"], r["quality"], strict=True)) for r in written]
    assert scores == sorted(scores, reverse=True)  # selection order is score order
    assert all(r["length_tokens"] < 2048 and not r["instruction"].endswith(":") for r in written)

    saved = json.loads((tmp_path / "selection.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["strategy"] == "deita" and saved["threshold"] == 0.5 and saved["budget"] == 10
    length_ok = sum(v < 2048 for v in pool["length_tokens"])
    pairs = zip(pool["length_tokens"], pool["instruction"], strict=True)
    both_ok = sum(v < 2048 and not s.endswith(":") for v, s in pairs)
    assert [step["kept"] for step in saved["filters"]] == [length_ok, both_ok]
    assert saved["counts"] == {"pool": 60, "scored": 60 - 5, "filtered": both_ok, "selected": 10}
    assert set(saved["seconds"]) == {"filters", "strategy", "audit", "write", "total"}
    assert (tmp_path / "report" / "audit.parquet").is_file()


def test_select_recipe_options_are_strict():
    problems: list[str] = []
    parse_select({"strategy": "deita", "treshold": 0.8}, problems)
    assert problems and "select.treshold: unknown key" in problems[0]
    problems = []
    parse_select({"strategy": "dedup", "radius": "small"}, problems)
    assert problems and "select.radius" in problems[0]
    with pytest.raises(RecipeError, match="select.filters.0"):
        select(scored_pool(), parse_select({"strategy": "random", "budget": 3, "filters": ["x.__class__"]}, []),
               seed=0, output_dir=Path("/nonexistent"))


def test_take_rows_equals_arrow_take_without_joining_chunks():
    """Chunk by chunk: same rows as `Table.take`, in any order, with repeats, across empty and uneven chunks."""
    import pyarrow as pa

    from deita_train.data.arrow_rows import take_rows

    rng = np.random.default_rng(0)
    sizes = [3, 0, 5, 1, 7]
    values = iter(range(sum(sizes)))
    schema = pa.schema({"a": pa.int64(), "s": pa.string()})
    table = pa.Table.from_batches([pa.record_batch({"a": [next(values) for _ in range(n)],
                                                    "s": [str(i) * 2 for i in range(n)]}, schema=schema)
                                   for n in sizes])
    for rows in (np.arange(16), np.sort(rng.choice(16, 9, replace=False)), rng.integers(0, 16, 30), np.array([], int)):
        assert take_rows(table, rows.astype(np.int64)).to_pylist() == table.take(pa.array(rows, pa.int64())).to_pylist()


def test_each_selection_pass_shows_its_rows_per_second_on_a_big_pool(tmp_path, monkeypatch, capsys):
    from deita_train.selection import runner

    config = parse_select({"strategy": "top_k", "score": "length_tokens", "budget": 5,
                           "filters": ["length_tokens < 2048"]}, [])
    select(scored_pool(), config, seed=0, output_dir=tmp_path / "small")
    assert "select: filters" not in capsys.readouterr().err  # a pass of a second or less shows no bar
    monkeypatch.setattr(runner, "WATCHED_ROWS", 5)
    select(scored_pool(), config, seed=0, output_dir=tmp_path / "big")
    shown = capsys.readouterr().err
    for name, rows in (("filters", 60), ("strategy", sum(v < 2048 for v in scored_pool()["length_tokens"])),
                       ("audit", 60), ("write", 5)):
        assert f"select: {name}: 100%" in shown and f"{rows}/{rows}" in shown and "rows/s" in shown
