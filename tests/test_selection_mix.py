"""`select.mix`: per-source shares of the budget over any strategy (largest remainders, shortfalls redistributed or
refused, rows without a share), every row in the funnel and the audit trail; `online.mix: adaptive` moves the
shares between rounds by DoReMi's rule and a resumed run restores them."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_from_disk

from deita_train.cli.main import main
from deita_train.errors import UserError
from deita_train.online.rescoring import ScoreTable, adapted_shares, source_means
from deita_train.recipe.errors import RecipeError
from deita_train.report.command import render_report
from deita_train.sections import load_recipe
from deita_train.selection.audit import audit_counts, check_against_funnel
from deita_train.selection.mix import apportion
from deita_train.selection.runner import select
from deita_train.selection.section import parse_select
from deita_train.selection.strategies import STRATEGIES

from .conftest import QUICKSTART_DATA, REPO

SOURCES = {"a.jsonl": 40, "b.jsonl": 30, "c.jsonl": 20}  # rows per source
SHARES = {"a.jsonl": 0.5, "b.jsonl": 0.3, "c.jsonl": 0.2}


def mixed_pool(sizes: dict[str, int] = SOURCES, unscored: bool = True) -> Dataset:
    """Rows of several sources, shuffled: a quality score (with `unscored`, none at every 7th row), 8-d unit
    embeddings where every 4th row of a source repeats the source's row before it."""
    source = np.random.default_rng(0).permutation(np.repeat(list(sizes), list(sizes.values())))
    n = len(source)
    vectors = np.random.default_rng(1).normal(size=(n, 8))
    for name in sizes:
        rows = np.flatnonzero(source == name)
        vectors[rows[1::4]] = vectors[rows[0::4][: len(rows[1::4])]]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    quality = np.random.default_rng(2).uniform(1, 6, n)
    return Dataset.from_dict({
        "id": list(range(n)),
        "source_file": source.tolist(),
        "quality": [None if unscored and i % 7 == 3 else [float(q)] for i, q in enumerate(quality)],
        "complexity": [[2.0]] * n,
        "embedding": vectors.tolist(),
    })


def run(tmp_path, pool: Dataset, options: dict, **mix):
    problems: list[str] = []
    config = parse_select({**options, "mix": {"shares": SHARES} | mix}, problems)
    assert problems == []
    return select(pool, config, seed=0, output_dir=tmp_path)


def by_source(pool: Dataset, ids: list[int]) -> dict[str, list[int]]:
    """`ids` grouped by source, each in its order in `ids`."""
    source = dict(zip(pool["id"], pool["source_file"], strict=True))
    return {name: [i for i in ids if source[i] == name] for name in dict.fromkeys(source.values())}


def assert_audit_adds_up(tmp_path, funnel: dict, selected_ids: list[int]) -> pa.Table:
    audit = pq.read_table(tmp_path / "report" / "audit.parquet")
    check_against_funnel(audit_counts(audit), funnel, 0)  # raises when a reason's count differs from the funnel's
    ranked = sorted((r, i) for r, i in zip(audit["rank"].to_pylist(), audit["id"].to_pylist(), strict=True) if r)
    assert [i for _, i in ranked] == selected_ids  # the audit's ranks are the selection order
    return audit


CASES = [
    {"strategy": "top_k", "score": "quality", "budget": 30},
    {"strategy": "random", "budget": 30},
    {"strategy": "deita", "score": "complexity * quality", "budget": 30},
    {"strategy": "dedup", "backend": "torch", "budget": 30},
]


@pytest.mark.parametrize("options", CASES, ids=lambda options: options["strategy"])
def test_shares_hold_and_each_source_gets_the_strategy_alone(tmp_path, options):
    pool = mixed_pool()
    selected, summary = run(tmp_path, pool, options)
    funnel = json.loads((tmp_path / "selection.json").read_text())["funnel"]
    budgets = dict(zip(SHARES, apportion(30, np.array(list(SHARES.values()))).tolist(), strict=True))
    assert budgets == {"a.jsonl": 15, "b.jsonl": 9, "c.jsonl": 6}
    picked = by_source(pool, selected["id"])
    assert {name: len(ids) for name, ids in picked.items()} == budgets  # within one row of share x budget
    for name, ids in picked.items():  # the strategy run on the source's rows alone, with the source's budget
        alone = pool.filter(lambda row, name=name: row["source_file"] == name)
        strategy = STRATEGIES.get(options["strategy"], "test")
        config = parse_select({**options, "budget": budgets[name]}, []).options
        assert ids == [alone["id"][p] for p in strategy(config, 0).select(alone)], name
    first = by_source(pool, selected["id"][:10])  # the sources interleaved: every prefix keeps the shares
    assert all(abs(len(first[name]) - 10 * share) <= 1 for name, share in SHARES.items())
    assert funnel["mix"]["sources"]["a.jsonl"] == {"share": 0.5, "candidates": 40, "budget": 15, "received": 0,
                                                   "selected": 15, "shortfall": 0}
    removals = [funnel[name] for name in STRATEGIES.get(options["strategy"], "test").removals]
    parts = [funnel["not_in_mix"], funnel["unscored"]["rows"], *removals, funnel["beyond_budget"], funnel["selected"]]
    assert sum(parts) == funnel["pool"] == 90 and funnel["not_in_mix"] == 0 and funnel["selected"] == 30
    assert summary["mix"] == {"by": "source_file", "shares": SHARES, "shortfall": "redistribute"}
    audit = assert_audit_adds_up(tmp_path, funnel, selected["id"])
    vectors = dict(zip(pool["id"], pool["embedding"], strict=True))
    for name in STRATEGIES.get(options["strategy"], "test").removals:  # a repeated row is rejected or a duplicate
        notes = [(i, int(d.rsplit(" ", 1)[1])) for i, d, r in
                 zip(*(audit[c].to_pylist() for c in ("id", "detail", "reason")), strict=True) if r == name]
        assert len(notes) == funnel[name] > 0
        assert all(other != i and vectors[other] == vectors[i] for i, other in notes)  # the note names its twin


def test_largest_remainders_sum_to_the_budget_exactly():
    assert apportion(10, np.array([1, 1, 1]) / 3).tolist() == [4, 3, 3]  # equal remainders: the earlier source
    assert apportion(7, np.array([0.5, 0.0, 0.5])).tolist() == [4, 0, 3]
    rng = np.random.default_rng(0)
    for _ in range(200):
        weights, total = rng.dirichlet(np.ones(rng.integers(1, 9))), int(rng.integers(0, 10_000))
        parts = apportion(total, weights)
        assert parts.sum() == total and np.all(np.abs(parts - total * weights) < 1)


def test_a_short_source_gives_its_rows_to_the_others_by_their_shares(tmp_path, caplog):
    """c has 3 rows for its 6: a and b get 2 and 1 (shares 0.5 : 0.3); b has 9 rows for its 10: a gets 1 more."""
    pool = mixed_pool({"a.jsonl": 40, "b.jsonl": 9, "c.jsonl": 3}, unscored=False)
    with caplog.at_level(logging.WARNING, logger="deita_train.selection.mix"):
        selected, _ = run(tmp_path, pool, {"strategy": "top_k", "score": "quality", "budget": 30})
    funnel = json.loads((tmp_path / "selection.json").read_text())["funnel"]
    sources = funnel["mix"]["sources"]
    assert {name: (s["budget"], s["received"], s["selected"], s["shortfall"]) for name, s in sources.items()} == {
        "a.jsonl": (15, 3, 18, 0), "b.jsonl": (9, 1, 9, 1), "c.jsonl": (6, 0, 3, 3)}
    assert funnel["mix"]["redistributed"] == 4 and funnel["selected"] == len(selected) == 30
    assert "shortfall" not in funnel
    assert [r.getMessage().split(":")[1].split()[0] for r in caplog.records] == ["'b.jsonl'", "'c.jsonl'"]
    assert_audit_adds_up(tmp_path, funnel, selected["id"])
    render_report(tmp_path)  # the report's selection section shows the mix
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| c.jsonl | 0.2 | 3 | 6 | 0 | 3 | 3 |" in summary


def test_every_source_exhausted_selects_all_it_can(tmp_path):
    pool = mixed_pool({"a.jsonl": 4, "b.jsonl": 3, "c.jsonl": 2})
    selected, _ = run(tmp_path, pool, {"strategy": "random", "budget": 30})
    funnel = json.loads((tmp_path / "selection.json").read_text())["funnel"]
    assert len(selected) == funnel["selected"] == 9 and funnel["shortfall"] == 21 and funnel["beyond_budget"] == 0
    assert sum(s["shortfall"] for s in funnel["mix"]["sources"].values()) - funnel["mix"]["redistributed"] == 21
    assert_audit_adds_up(tmp_path, funnel, selected["id"])


def test_refuse_names_the_short_source(tmp_path):
    pool = mixed_pool({"a.jsonl": 40, "b.jsonl": 30, "c.jsonl": 3})
    with pytest.raises(UserError, match=r"select.mix: source 'c.jsonl' \(share 0.2\) yields 2 rows of the 6 its "
                                        r"share of the budget asks for \(3 candidates"):  # one unscored
        run(tmp_path, pool, {"strategy": "top_k", "score": "quality", "budget": 30}, shortfall="refuse")
    assert not (tmp_path / "selected").exists()


def test_rows_of_a_source_without_a_share_are_not_in_the_mix(tmp_path):
    pool = mixed_pool({**SOURCES, "d.jsonl": 10})
    selected, _ = run(tmp_path, pool, {"strategy": "top_k", "score": "quality", "budget": 30})
    funnel = json.loads((tmp_path / "selection.json").read_text())["funnel"]
    assert funnel["not_in_mix"] == 10 and funnel["mix"]["not_in_mix"] == {"d.jsonl": 10}
    assert list(funnel)[:4] == ["pool", "filtered", "not_in_mix", "unscored"]
    assert by_source(pool, selected["id"])["d.jsonl"] == []
    audit = assert_audit_adds_up(tmp_path, funnel, selected["id"])
    rows = [d for d, reason in zip(audit["detail"].to_pylist(), audit["reason"].to_pylist(), strict=True)
            if reason == "not_in_mix"]
    assert rows == ["source_file 'd.jsonl' has no share in select.mix"] * 10


# -- validate --------------------------------------------------------------------------------------------------------

RECIPE = "recipes/quickstart/online-cpu.yaml"
ALPACA = "alpaca_cleaned_400.jsonl"


@pytest.mark.parametrize(("overrides", "expected"), [
    ([f"select.mix={{shares: {{{ALPACA}: 0.6}}}}"], "select.mix.shares: must sum to 1, got 0.6"),
    ([f"select.mix={{shares: {{{ALPACA}: 1.5, b.jsonl: -0.5}}}}"], "select.mix.shares.b.jsonl: must be above 0"),
    (["select.mix={shares: {alpaca_cleaned.jsonl: 1}}"],
     "select.mix.shares.alpaca_cleaned.jsonl: no pool source is named 'alpaca_cleaned.jsonl'; did you mean "
     f"'{ALPACA}'?"),
    ([f"select.mix={{by: origin, shares: {{{ALPACA}: 1}}}}"], "select.mix.by: no column 'origin'"),
    ([f"select.mix={{shares: {{{ALPACA}: 1}}, shortfall: drop}}"], "select.mix.shortfall: expected one of"),
    (["select={strategy: threshold, score: length, min: 10}", f"select.mix={{shares: {{{ALPACA}: 1}}}}"],
     "select.budget: `mix` divides the budget between the sources"),
    (["online.mix=adaptive"], "online.mix: `adaptive` moves the shares of online.select.mix"),
    (["online.mix_step=0"], "online.mix_step: must be above 0"),
    (["online.mix_smoothing=2"], "online.mix_smoothing: must be in [0, 1]"),
    ([f"online.select.mix={{shares: {{{ALPACA}: 0.5}}}}"], "online.select.mix.shares: must sum to 1"),
])
def test_validate_names_the_mix_key(overrides, expected, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(RecipeError) as caught:
        load_recipe(RECIPE, [f"model.name_or_path={tiny_model}", "~dpo", *overrides])
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


# -- online: adaptive shares -----------------------------------------------------------------------------------------

def test_the_adaptive_update_follows_doremi():
    shares, means = np.array([0.5, 0.3, 0.2]), np.array([2.0, 1.0, 3.0])
    weights = shares * np.exp(0.5 * (means - 2.0))
    expected = 0.9 * weights / weights.sum() + 0.1 / 3
    moved = adapted_shares(shares, means, step=0.5, smoothing=0.1)
    assert moved == pytest.approx(expected) and moved.sum() == pytest.approx(1)
    assert moved[2] > shares[2] and moved[1] < shares[1]  # toward the least learned source
    kept = adapted_shares(shares, np.array([2.0, np.nan, 2.0]), step=1.0, smoothing=0.0)
    assert kept == pytest.approx(shares)  # no scored row: its weight is kept; equal means: nothing moves


def test_source_means_average_every_scored_turn():
    candidates = Dataset.from_dict({"source_file": ["a", "b", "a", "c", "b"]})
    table = ScoreTable(values=[[1.0, 3.0], [4.0], None, [5.0], [float("nan"), 6.0]])
    means = source_means(candidates, table, "source_file", ["a", "b", "d"])
    assert means[:2].tolist() == [2.0, 5.0] and math.isnan(means[2])


FAST = ["~dpo", "~score", "~select", "callbacks=[]", "sft.max_length=128", "online.scorer.max_length=128",
        "sft.per_device_train_batch_size=4", "sft.logging_steps=1", "online.select.budget=8",
        "online.pool_fraction=1.0", "online.mix=adaptive", "online.mix_step=20", "online.mix_smoothing=0.05",
        "online.select.mix={shares: {first.jsonl: 0.5, second.jsonl: 0.5}}", "sft.num_train_epochs=3",
        "sft.save_strategy=steps", "sft.save_steps=3"]


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """24 alpaca rows in each of two files."""
    folder = tmp_path_factory.mktemp("sources")
    lines = (QUICKSTART_DATA / ALPACA).read_text().splitlines()
    for name, part in (("first.jsonl", lines[:24]), ("second.jsonl", lines[24:48])):
        (folder / name).write_text("\n".join(part) + "\n")
    return folder


def online_run(out, tiny_model, sources, *overrides) -> list[dict]:
    """Train on the two sources with adaptive shares; every round's `round.json`, by round."""
    files = ", ".join(f"{{path: {sources / name}, format: alpaca}}" for name in ("first.jsonl", "second.jsonl"))
    assert main(["run", RECIPE, f"output_dir={out}", f"model.name_or_path={tiny_model}", f"pool=[{files}]", *FAST,
                 *overrides]) == 0
    found = sorted((out / "online").glob("round_*/round.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    return [json.loads(path.read_text()) for path in found]


def test_online_shares_move_by_the_rule_and_resume(tmp_path, tiny_model, two_sources, monkeypatch):
    """3 epochs of 2 steps, a round per epoch; the resumed run stops at the checkpoint of step 3 (after rounds 0 and
    1), so round 2 must move round 1's shares, read back from its round.json."""
    monkeypatch.chdir(REPO)
    whole = online_run(tmp_path / "whole", tiny_model, two_sources)
    assert [r["round"] for r in whole] == [0, 1, 2]
    assert whole[0]["mix"] == {"first.jsonl": 0.5, "second.jsonl": 0.5}  # round 0: the configured shares
    names = list(whole[0]["mix"])
    for r in whole:  # the per-source means: every scored turn of the round's scores (ids 0..23: first.jsonl)
        scores = load_from_disk(str(tmp_path / "whole" / "online" / f"round_{r['round']}" / "scores"))
        turns = {n: [] for n in names}
        for row_id, value in zip(scores["id"], scores["score"], strict=True):
            turns[names[row_id >= 24]] += value or []
        assert r["mix_scores"] == pytest.approx({n: np.mean(turns[n]) for n in names})
    for before, after in zip(whole[:-1], whole[1:], strict=True):
        moved = adapted_shares(np.array([before["mix"][n] for n in names]),
                               np.array([after["mix_scores"][n] for n in names]), step=20, smoothing=0.05)
        assert [after["mix"][n] for n in names] == pytest.approx(moved.tolist())
        assert after["mix"] != before["mix"]
    for r in whole:  # each round's budget split by its shares
        budgets = apportion(8, np.array([r["mix"][n] for n in names])).tolist()
        assert [r["mix_selected"][n] for n in names] == budgets and r["counts"]["selected"] == 8
    logged = [e for e in json.loads((tmp_path / "whole" / "sft" / "trainer_state.json").read_text())["log_history"]
              if "online/round" in e]
    assert [e["online/mix/first.jsonl"] for e in logged] == [r["mix"]["first.jsonl"] for r in whole]

    online_run(tmp_path / "resumed", tiny_model, two_sources, "sft.max_steps=3")  # stopped at the checkpoint
    resumed = online_run(tmp_path / "resumed", tiny_model, two_sources, "sft.resume_from_checkpoint=true")
    assert [r["round"] for r in resumed] == [0, 1, 2]
    assert [r["mix"] for r in resumed] == [r["mix"] for r in whole]  # round 2 moved round 1's shares, read back
