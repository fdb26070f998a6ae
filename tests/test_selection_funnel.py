"""The selection funnel: every pool row accounted for once, per strategy; shortfall warnings; empty selections
raise before `selected/` is written; unscorable reasons travel from the scorer to `<column>_reason`."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Dataset

from deita_train.cli.main import main
from deita_train.errors import UserError
from deita_train.scoring import SCORERS, ScoringContext
from deita_train.scoring.base import Score, Scorer
from deita_train.scoring.config import ScorerConfig
from deita_train.scoring.engine import score_pool
from deita_train.selection.runner import select
from deita_train.selection.section import parse_select
from deita_train.selection.simple import TopKStrategy
from deita_train.selection.strategies import STRATEGIES

from .conftest import QUICKSTART_DATA
from .scoring_fixtures import record

FILTER = "tokens < 500"  # rows 0, 1: null; rows 2, 3: 900; the 16 candidates are rows 4..19
# rows 4..7 have no quality: two empty answers, one prompt too long, one null without a reason
QUALITY_REASONS = {4: "empty answer", 5: "empty answer", 6: "prompt fills max_length", 7: None}
# rows 10..19: five pairs 1 degree apart (each pair's second row scores lower); rows 4..8 20 degrees apart
ANGLES = [300, 310, 320, 330, 200, 220, 240, 260, 280, None, 0, 1, 40, 41, 80, 81, 120, 121, 160, 161]
QUALITY = [3.0] * 10 + [10.0, 5.0, 9.0, 4.0, 8.0, 3.0, 7.0, 2.0, 6.0, 1.0]
IFD = [0.5] * 4 + [None, 1.2, 1.0, 0.5, 0.6, 0.7, 0.95, 0.9, 0.85, 1.1, 0.8, 0.75, 0.7, 1.5, 0.65, 0.6]


def scored_pool() -> Dataset:
    """20 scored rows: nulls with and without reasons, IFD around 1, embeddings with near-duplicate pairs."""
    n = len(ANGLES)
    vector = [None if a is None else [math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES]
    return Dataset.from_dict({
        "id": list(range(n)),
        "tokens": [None, None, 900, 900] + [100] * (n - 4),
        "quality": [None if i in QUALITY_REASONS else [QUALITY[i]] for i in range(n)],
        "quality_reason": [QUALITY_REASONS.get(i) for i in range(n)],
        "complexity": [None if i == 8 else [2.0] for i in range(n)],  # no `complexity_reason` column
        "ifd": [None if v is None else [v] for v in IFD],
        "ifd_reason": ["empty answer" if v is None else None for v in IFD],
        "embedding": vector,
    })


def run(tmp_path, options: dict, filters: list[str] | None = None):
    problems: list[str] = []
    config = parse_select({**options, "filters": [FILTER] if filters is None else filters}, problems)
    assert problems == []
    return select(scored_pool(), config, seed=0, output_dir=tmp_path)


def assert_adds_up(funnel: dict, strategy: str) -> None:
    """pool = filtered + unscored + the strategy's removals + beyond_budget + selected, and each part adds up."""
    removals = STRATEGIES.get(strategy, "test").removals
    parts = [funnel["filtered"]["rows"], funnel["unscored"]["rows"], *(funnel[k] for k in removals),
             funnel["beyond_budget"], funnel["selected"]]
    assert funnel["pool"] == sum(parts) and min(parts) >= 0
    assert funnel["filtered"]["rows"] == sum(f["removed"] for f in funnel["filtered"]["by_filter"])
    assert funnel["unscored"]["rows"] == sum(n for reasons in funnel["unscored"]["by_column"].values()
                                             for n in reasons.values())


FILTERED = {"rows": 4, "by_filter": [{"key": "select.filters.0", "filter": FILTER, "removed": 4, "null": 2}]}
NO_QUALITY = {"quality": {"empty answer": 2, "prompt fills max_length": 1, "null": 1}}

CASES = [
    # options, unscored by column, strategy's removals, beyond_budget, selected, budget
    ({"strategy": "random", "budget": 10}, {}, {}, 6, 10, 10),
    ({"strategy": "top_k", "score": "quality", "budget": 5}, NO_QUALITY, {}, 7, 5, 5),
    ({"strategy": "threshold", "score": "quality", "min": 5}, NO_QUALITY, {"score_cut": 6}, 0, 6, None),
    ({"strategy": "deita", "score": "complexity * quality", "budget": 3},
     {"embedding": {"null": 1}, "complexity": {"null": 1}, **NO_QUALITY}, {"rejected_by_diversity": 0}, 7, 3, 3),
    ({"strategy": "deita", "score": "complexity * quality", "budget": None},
     {"embedding": {"null": 1}, "complexity": {"null": 1}, **NO_QUALITY}, {"rejected_by_diversity": 5}, 0, 5, None),
    ({"strategy": "superfilter", "budget": 5}, {"ifd": {"empty answer": 1}}, {"score_cut": 4}, 6, 5, 5),
    ({"strategy": "cherry", "fraction": 0.5}, {"ifd": {"empty answer": 1}}, {"score_cut": 3}, 6, 6, 6),
    ({"strategy": "facility_location", "budget": 3, "preselect": 0.5},
     {"embedding": {"null": 1}, "ifd": {"empty answer": 1}}, {"score_cut": 4, "not_preselected": 2}, 5, 3, 3),
    ({"strategy": "kcenter", "budget": 5}, {"embedding": {"null": 1}}, {}, 10, 5, 5),
    ({"strategy": "dedup", "backend": "torch", "budget": 4}, {"embedding": {"null": 1}}, {"duplicates": 5}, 6, 4, 4),
]


@pytest.mark.parametrize(("options", "unscored", "removed", "beyond", "selected", "budget"), CASES,
                         ids=lambda v: v["strategy"] if isinstance(v, dict) and "strategy" in v else None)
def test_funnel_adds_up_per_strategy(tmp_path, caplog, options, unscored, removed, beyond, selected, budget):
    with caplog.at_level(logging.INFO, logger="deita_train.selection.runner"):
        rows, summary = run(tmp_path, options)
    funnel = json.loads((tmp_path / "selection.json").read_text())["funnel"]
    assert funnel == summary["funnel"]
    assert_adds_up(funnel, options["strategy"])
    assert funnel["filtered"] == FILTERED
    assert funnel["unscored"] == {"rows": sum(sum(r.values()) for r in unscored.values()), "by_column": unscored}
    assert {k: funnel[k] for k in removed} == removed
    assert (funnel["beyond_budget"], funnel["selected"], funnel["budget"]) == (beyond, selected, budget)
    assert len(rows) == selected == summary["counts"]["selected"] and "shortfall" not in funnel
    lines = [r.getMessage() for r in caplog.records if r.name == "deita_train.selection.runner"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("deita_train")]
    assert lines[0] == "select: pool 20 rows" and lines[1] == f"select: select.filters.0 {FILTER!r} removed 4 (2 null), 16 left"
    assert lines[-1].startswith(f"select: selected {selected}")


@pytest.mark.parametrize(("options", "causes"), [
    ({"strategy": "random", "budget": 20}, f"(select.filters.0 {FILTER!r} removed 4 (2 null))"),
    ({"strategy": "top_k", "score": "quality", "budget": 20},
     "unscored 4 (quality: empty answer 2, null 1, prompt fills max_length 1)"),
    ({"strategy": "deita", "score": "complexity * quality", "budget": 8}, "rejected by diversity 5)"),
    ({"strategy": "superfilter", "fraction": 0.9}, "score cut 4 (keeps mean(ifd) < 1))"),
    ({"strategy": "facility_location", "budget": 10, "preselect": 0.5}, "not preselected 2)"),
    ({"strategy": "kcenter", "budget": 30}, "unscored 1 (embedding: null 1)"),
    ({"strategy": "dedup", "backend": "torch", "budget": 12}, "duplicates 5)"),
])
def test_shortfall_warns_with_its_causes(tmp_path, caplog, options, causes):
    with caplog.at_level(logging.INFO, logger="deita_train.selection.runner"):
        rows, summary = run(tmp_path, options)
    funnel = summary["funnel"]
    assert_adds_up(funnel, options["strategy"])
    assert funnel["shortfall"] == funnel["budget"] - len(rows) > 0 and funnel["beyond_budget"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("deita")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"select: budget not reached: selected {len(rows)} of {funnel['budget']} (")
    assert causes in warnings[0]


@pytest.mark.parametrize(("options", "filters", "words"), [
    ({"strategy": "random", "budget": 3}, [FILTER, "tokens > 1000"],
     f"select.filters.0 {FILTER!r} removed 4 (2 null), 16 left; select.filters.1 'tokens > 1000' removed 16, 0 left; "
     "loosen select.filters.1"),
    ({"strategy": "threshold", "score": "quality", "min": 100}, None,
     "score cut 12 (keeps quality >= 100.0), 0 left; no scored row passes the cut"),
    ({"strategy": "cherry", "fraction": 0.05}, None, "beyond budget 12, 0 left; the budget is 0 rows"),
    ({"strategy": "superfilter", "budget": 3}, [FILTER, "mean(ifd) > 1.2"],
     "select.filters.1 'mean(ifd) > 1.2' removed 15 (1 null), 1 left; "
     "score cut 1 (keeps mean(ifd) < 1), 0 left; no scored row passes the cut"),
])
def test_empty_selection_raises_naming_the_step(tmp_path, options, filters, words):
    with pytest.raises(UserError) as caught:
        run(tmp_path, options, filters)
    message = str(caught.value)
    assert message.startswith("select: no row selected from 20 rows: ")
    assert not (tmp_path / "selected").exists() and not (tmp_path / "selection.json").exists()
    assert words in message


def test_unscored_by_reason_empties_selection(tmp_path):
    with pytest.raises(UserError) as caught:
        run(tmp_path, {"strategy": "top_k", "score": "quality", "budget": 3}, ["quality_reason != ''"])
    assert str(caught.value) == (
        "select: no row selected from 20 rows: select.filters.0 \"quality_reason != ''\" removed 17 (17 null), 3 left; "
        "unscored 3 (quality: empty answer 2, prompt fills max_length 1), 0 left; "
        "check the score columns (`<column>_reason` in scored/ says why a row has no score)"
    )


def test_counts_that_do_not_add_up_are_a_bug_not_a_funnel(tmp_path, monkeypatch):
    ranked = TopKStrategy.select

    def forgets_unranked(self, scored):
        picks = ranked(self, scored)
        self.unranked = None  # as if every row had been ranked: 4 rows would be left beyond an unfilled budget
        return picks

    monkeypatch.setattr(TopKStrategy, "select", forgets_unranked)
    with pytest.raises(RuntimeError, match="counts of strategy 'top_k' do not add up"):
        run(tmp_path, {"strategy": "top_k", "score": "quality", "budget": 20})
    assert not (tmp_path / "selected").exists()


def test_run_stops_at_an_empty_selection_before_training(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "output_dir": str(out),
        "model": {"name_or_path": str(tiny_model)},
        "pool": [{"path": str(QUICKSTART_DATA / "alpaca_cleaned_400.jsonl"), "format": "alpaca", "limit": 40}],
        "select": {"strategy": "random", "budget": 10, "filters": ["len(output) > 1000000"]},
        "sft": {"num_train_epochs": 1, "use_cpu": True},
    }))
    assert main(["run", str(recipe)]) == 2
    error = capsys.readouterr().err
    assert "select: no row selected from 40 rows: select.filters.0 'len(output) > 1000000' removed 40" in error
    assert not (out / "selected").exists() and not (out / "sft").exists()


class ToyQuality(Scorer):
    """Answer length in tens of characters; an empty answer or a long prompt is unscorable."""

    name = "toy_quality"
    per_turn = True

    def score_batch(self, batch):
        scores = []
        for row in batch:
            prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
            if not answer:
                scores.append(Score.unscorable("empty answer"))
            elif len(prompt) > 40:
                scores.append(Score.unscorable("prompt fills max_length"))
            else:
                scores.append(Score(value=[len(answer) / 10]))
        return scores


def toy_pool() -> Dataset:
    answers = ["a fine answer", "", "short", "", "a longer answer here"]
    rows = [record(i, [(f"question {i}", answer)]) for i, answer in enumerate(answers)]
    rows.append(record(5, [("x" * 50, "an answer")]))
    return Dataset.from_list(rows)


def test_unscorable_reason_reaches_the_reason_column_and_the_funnel(tmp_path, monkeypatch):
    monkeypatch.setitem(SCORERS._entries, "toy_quality", ToyQuality)
    scorers = {"quality": ScorerConfig(type="toy_quality", shard_size=4)}
    scored, stats = score_pool(toy_pool(), scorers, ScoringContext(), tmp_path / "scored")
    assert scored["quality_reason"] == [None, "empty answer", None, "empty answer", None, "prompt fills max_length"]
    assert [v is None for v in scored["quality"]] == [False, True, False, True, False, True]
    assert stats["quality"]["unscorable"] == {"empty answer": 2, "prompt fills max_length": 1}

    config = parse_select({"strategy": "top_k", "score": "quality", "budget": 5}, [])
    _, summary = select(scored, config, seed=0, output_dir=tmp_path)
    assert summary["funnel"]["unscored"] == {
        "rows": 3, "by_column": {"quality": {"empty answer": 2, "prompt fills max_length": 1}}}
    assert summary["funnel"]["shortfall"] == 2


def test_shards_cached_before_reasons_merge_without_rescoring(tmp_path, monkeypatch):
    monkeypatch.setitem(SCORERS._entries, "toy_quality", ToyQuality)
    scorers = {"quality": ScorerConfig(type="toy_quality", shard_size=4)}
    score_pool(toy_pool(), scorers, ScoringContext(), tmp_path / "scored")
    for shard in (tmp_path / "scored_shards" / "toy_quality").glob("*.parquet"):  # as an older engine wrote them
        pq.write_table(pq.read_table(shard).drop_columns(["reason"]), shard)
    monkeypatch.setattr(ToyQuality, "score_batch", lambda self, batch: pytest.fail("a cached shard was rescored"))
    scored, stats = score_pool(toy_pool(), scorers, ScoringContext(), tmp_path / "scored")
    unknown = "unknown (cached before reasons were kept)"
    assert scored["quality_reason"] == [None, unknown, None, unknown, None, unknown]
    assert stats["quality"]["shards"] == {"total": 2, "reused": 2}


@pytest.mark.parametrize(("options", "unscored", "removed", "beyond", "selected", "budget"), CASES,
                         ids=lambda v: v["strategy"] if isinstance(v, dict) and "strategy" in v else None)
def test_audit_trail_gives_every_row_its_rank_or_first_reason(tmp_path, options, unscored, removed, beyond, selected,
                                                              budget):
    rows, summary = run(tmp_path, options)
    audit = pq.read_table(tmp_path / "report" / "audit.parquet").to_pylist()
    assert [row["id"] for row in audit] == list(range(20))  # one row per pool record
    ranked = sorted((row for row in audit if row["rank"] is not None), key=lambda row: row["rank"])
    assert [row["id"] for row in ranked] == rows["id"] and all(row["reason"] is None for row in ranked)
    reasons = Counter(row["reason"] for row in audit if row["rank"] is None)
    assert reasons == Counter({"filtered": 4, "unscored": sum(sum(r.values()) for r in unscored.values()),
                               **removed, "beyond_budget": beyond}) - Counter()  # zero counts dropped
    assert {row["detail"] for row in audit[:4]} == {f"select.filters.0: {FILTER}"}
    for row in audit:
        if row["reason"] == "unscored" and row["id"] in QUALITY_REASONS and "quality" in str(options.get("score")):
            assert row["detail"] == f"quality: {QUALITY_REASONS[row['id']] or 'null'}"
        if row["reason"] == "rejected_by_diversity":  # the nearest selected row, as close as it says
            similarity, nearest = re.fullmatch(r"similarity (\S+) > 0.9 to selected id (\d+)", row["detail"]).groups()
            assert int(nearest) in rows["id"]
            angle = math.radians(ANGLES[row["id"]] - ANGLES[int(nearest)])
            assert float(similarity) == pytest.approx(math.cos(angle), abs=1e-4) and float(similarity) > 0.9
        if row["reason"] == "duplicates":  # each pair's second row, after its first
            assert row["detail"] == f"within 0.05 (squared L2) of the earlier id {row['id'] - 1}"
        if row["reason"] == "score_cut" and options["strategy"] == "threshold":
            assert re.fullmatch(r"score \S+ fails quality >= 5(\.0)?", row["detail"])
        if row["reason"] == "beyond_budget":
            assert row["detail"] is None  # selection.json has the budget


def test_skipped_records_are_in_the_audit_too(tmp_path):
    problems: list[str] = []
    config = parse_select({"strategy": "random", "budget": 3}, problems)
    select(scored_pool(), config, seed=0, output_dir=tmp_path,
           skipped=[{"path": "pool.jsonl", "where": "line 7", "problem": "not JSON"}])
    audit = pq.read_table(tmp_path / "report" / "audit.parquet").to_pylist()
    assert len(audit) == 21 and audit[-1] == {"id": None, "source_file": "pool.jsonl", "source_row": None,
                                              "rank": None, "reason": "skipped", "detail": "line 7: not JSON"}


@pytest.mark.parametrize(("options", "unscored", "removed", "beyond", "selected", "budget"), CASES,
                         ids=lambda v: v["strategy"] if isinstance(v, dict) and "strategy" in v else None)
def test_a_pool_read_in_parts_selects_and_audits_as_in_one(tmp_path, monkeypatch, options, unscored, removed, beyond,
                                                           selected, budget):
    """Filters, scores, `top_k` and the audit read the pool a part at a time: parts of 3 rows (a part with no
    candidate, parts cut inside the filtered and the unscored rows) give what one part gives."""
    from deita_train.data import arrow_rows

    whole, summary = run(tmp_path / "whole", options)
    monkeypatch.setattr(arrow_rows, "PART_ROWS", 3)
    parted, parted_summary = run(tmp_path / "parts", options)
    assert parted["id"] == whole["id"]
    for found in (summary, parted_summary):
        found.pop("seconds")
        for step in found["filters"]:
            step.pop("seconds")
    assert parted_summary == summary
    audits = [pq.read_table(tmp_path / name / "report" / "audit.parquet") for name in ("whole", "parts")]
    assert audits[1].to_pylist() == audits[0].to_pylist()
    assert pq.ParquetFile(tmp_path / "parts" / "report" / "audit.parquet").metadata.num_row_groups == 8  # 7 + skipped


def test_score_cut_notes_are_made_when_the_audit_reads_them():
    """A threshold that cuts millions of rows holds no string per row: each note is made when read."""
    from deita_train.selection.base import ScoreNotes

    scores = np.array([0.5, 3.25, np.nan, 1e-7])
    notes = ScoreNotes(scores, np.array([0, 1, 3]), "quality >= 4")
    assert len(notes) == 3 and notes[1] == "score 3.25 fails quality >= 4"
    assert notes[1:] == ["score 3.25 fails quality >= 4", "score 1e-07 fails quality >= 4"]
    assert list(notes) == [notes[0], *notes[1:]]
