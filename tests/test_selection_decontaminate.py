"""`select.decontaminate`: pool rows whose user turns overlap MT-Bench, AlpacaEval or a prompt file are dropped
before the filters, counted first in the funnel and listed in `selection.json`; the options are checked up front."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Dataset

from deita_train.data.formats import adapt
from deita_train.errors import UserError
from deita_train.recipe.errors import RecipeError
from deita_train.report.command import render_report
from deita_train.sections import load_recipe
from deita_train.selection.config import DecontaminateConfig
from deita_train.selection.decontaminate import find_contamination
from deita_train.selection.eval_prompts import eval_prompts
from deita_train.selection.runner import select
from deita_train.selection.section import parse_select

from .conftest import QUICKSTART_DATA

ALPACA = QUICKSTART_DATA / "alpaca_cleaned_400.jsonl"
QUESTIONS = [json.loads(line) for line in
             (QUICKSTART_DATA.parents[2] / "deita_train/evaluation/data/mt_bench_questions.jsonl").open()]


def question(question_id: int, turn: int = 0) -> str:
    return next(q for q in QUESTIONS if q["question_id"] == question_id)["turns"][turn]


def chat(*users: str) -> list[dict[str, str]]:
    return [m for user in users for m in ({"role": "user", "content": user}, {"role": "assistant", "content": "ok"})]


def alpaca_chats() -> list[list[dict[str, str]]]:
    return [adapt(json.loads(line), "alpaca")[1]["messages"] for line in ALPACA.open()]


NEAR_MISS = " ".join(question(86).split()[2:14])  # 12 consecutive words of a long question, no 13
SEEDED = {  # position in the pool -> the user turns put there; each contaminated by MT-Bench
    3: chat(question(81)),  # verbatim
    50: chat(f"My teacher gave us this: {question(90)} Please fix it and explain every change."),  # inside a turn
    120: chat("Hello!", f"Next one. {question(101).upper().replace(',', ' ;')}"),  # second turn, case and punctuation
    200: chat(question(81, 1)),  # a prompt shorter than 13 words, as a whole turn
    333: chat(f"Continue this: {' '.join(question(86).split()[:20])}"),  # the first 20 words of a prompt
}
NOT_SEEDED = {
    10: chat(f"Quote: {NEAR_MISS}. That is all I remember of it."),  # 12 shared words: a near miss
    11: chat(f"{question(81, 1)} Also, make it rhyme."),  # a short prompt inside a longer turn
}


def seeded_pool() -> Dataset:
    """400 real Alpaca rows with the seeded and near-miss rows put in place of some, a `chars` column to filter on."""
    chats = alpaca_chats()
    for position, turns in (SEEDED | NOT_SEEDED).items():
        chats[position] = turns
    return Dataset.from_dict({"id": list(range(len(chats))), "messages": chats,
                              "chars": [sum(len(m["content"]) for m in c) for c in chats]})


def run(tmp_path, decontaminate: dict, **options):
    problems: list[str] = []
    config = parse_select({"strategy": "random", "decontaminate": decontaminate, **options}, problems)
    assert problems == []
    return select(seeded_pool(), config, seed=0, output_dir=tmp_path)


def test_seeded_rows_are_found_and_nothing_else(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="deita_train.selection.runner"):
        rows, summary = run(tmp_path, {"sets": ["mt_bench", "alpaca_eval"], "batch_rows": 64},
                            filters=["chars < 1500"], budget=300)
    saved = json.loads((tmp_path / "selection.json").read_text())
    decontamination = saved["decontamination"]
    assert decontamination["rows"] == len(SEEDED)
    assert decontamination["sets"] == {"mt_bench": {"prompts": 160, "shorter_than_ngram": 40, "rows": 5},
                                       "alpaca_eval": {"prompts": 805, "shorter_than_ngram": 257, "rows": 0}}
    examples = decontamination["examples"]
    assert [e["id"] for e in examples] == sorted(SEEDED) and {e["set"] for e in examples} == {"mt_bench"}
    assert examples[0]["ngram"] == "compose an engaging travel blog post about a recent trip to hawaii highlighting"
    assert examples[3] == {"id": 200, "set": "mt_bench", "overlap": 1.0,
                           "ngram": "rewrite your previous response start every sentence with the letter a"}
    assert [e["overlap"] for e in examples[:3]] == [1.0, 1.0, 1.0] and 0 < examples[4]["overlap"] < 1

    funnel = saved["funnel"]
    assert list(funnel)[:3] == ["pool", "decontaminated", "filtered"]
    assert funnel["decontaminated"] == {"rows": 5, "by_set": {"mt_bench": 5, "alpaca_eval": 0}}
    long = sum(c >= 1500 for i, c in enumerate(seeded_pool()["chars"]) if i not in SEEDED)
    assert funnel["filtered"]["rows"] == long == funnel["filtered"]["by_filter"][0]["removed"]
    assert funnel["pool"] == 400 == (funnel["decontaminated"]["rows"] + funnel["filtered"]["rows"]
                                     + funnel["unscored"]["rows"] + funnel["beyond_budget"] + funnel["selected"])
    assert saved["counts"]["filtered"] == 400 - 5 - long and "decontaminate" in saved["seconds"]
    assert len(rows) == 300 and not set(rows["id"]) & set(SEEDED)
    lines = [r.getMessage() for r in caplog.records if r.name == "deita_train.selection.runner"]
    assert lines[1] == "select: decontaminated 5 (mt_bench 5, alpaca_eval 0), 395 left"

    audit = pq.read_table(tmp_path / "report" / "audit.parquet").to_pylist()  # every match, per row
    found = {row["id"]: row["detail"] for row in audit if row["reason"] == "decontaminated"}
    assert sorted(found) == sorted(SEEDED)
    assert found[200] == "mt_bench: 'rewrite your previous response start every sentence with the letter a' (overlap 1)"
    render_report(tmp_path)  # and the report shows the counts and the first matches
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| mt_bench | 160 | 5 |" in summary and "| - decontaminated | 5 | 395 |" not in summary
    assert "| decontaminated | 5 | 395 |" in summary and "| 200 | mt_bench | rewrite your previous" in summary


def test_a_clean_pool_loses_no_row(tmp_path, caplog):
    pool = Dataset.from_dict({"id": list(range(400)), "messages": alpaca_chats()})
    config = parse_select({"strategy": "random", "budget": 10, "decontaminate": {"sets": ["mt_bench", "alpaca_eval"]}},
                          [])
    with caplog.at_level(logging.INFO, logger="deita_train.selection.runner"):
        _, summary = select(pool, config, seed=0, output_dir=tmp_path)
    assert summary["funnel"]["decontaminated"] == {"rows": 0, "by_set": {"mt_bench": 0, "alpaca_eval": 0}}
    assert summary["decontamination"]["rows"] == 0 and summary["decontamination"]["examples"] == []
    assert "select: decontaminated 0 (mt_bench 0, alpaca_eval 0), 400 left" in caplog.messages


def test_rows_found_by_position_with_their_match():
    """What the per-row audit reads: positions, set, matched text, overlap and rule, in row order."""
    found = find_contamination(seeded_pool(), DecontaminateConfig(sets=["alpaca_eval", "mt_bench"], batch_rows=7))
    assert found.rows.tolist() == sorted(SEEDED) and found.rows.dtype == np.int64
    # question 81's first turn is an AlpacaEval prompt too (its vicuna part): on a tie the set listed first wins
    assert found.sets == ["alpaca_eval"] + ["mt_bench"] * 4 and found.rules == ["ngram"] * 5
    assert found.matches[1] == "edit the following paragraph to correct any grammatical errors she didn t remembre"
    assert found.scores[4] == pytest.approx(20 / len(question(86).split()), abs=0.05)
    assert found.by_set() == {"alpaca_eval": 1, "mt_bench": 4}


@pytest.mark.parametrize(("min_overlap", "found"), [(None, sorted(SEEDED)), (0.4, sorted(SEEDED)),
                                                    (0.9, sorted(set(SEEDED) - {333}))])
def test_min_overlap_is_the_share_of_the_prompt_covered(min_overlap, found):
    """Row 333 holds the first 20 of the prompt's words (a share of about 0.45): contaminated at any shared n-gram and
    at 0.4, not at 0.9; the others hold whole prompts (1.0)."""
    config = DecontaminateConfig(sets=["mt_bench"], min_overlap=min_overlap)
    assert find_contamination(seeded_pool(), config).rows.tolist() == found


def test_ngram_size_sets_what_counts_as_shared():
    """With 12-grams the near miss (12 shared words) is contaminated too."""
    found = find_contamination(seeded_pool(), DecontaminateConfig(sets=["mt_bench"], ngram=12))
    assert 10 in found.rows.tolist() and set(SEEDED) <= set(found.rows.tolist())


def test_alpaca_eval_prompts_ship_with_the_package():
    prompts = eval_prompts("alpaca_eval", "k")
    assert len(prompts) == 805 and prompts[1] == "How did US states get their names?"
    assert len(eval_prompts("mt_bench", "k")) == 160


def test_a_prompt_file_names_its_own_set(tmp_path):
    chats = alpaca_chats()[:30]
    prompts = ["Summarize the plot of a novel about a lighthouse keeper who finds a map hidden in the walls.",
               "Name three birds."]
    chats[4] = chat(f"Please: {prompts[0]}")
    chats[7] = chat("name THREE birds!")
    chats[8] = chat("Name three birds that live in cold places.")  # a short prompt inside a longer turn: kept
    for i in range(9, 30):  # more matches than selection.json lists
        chats[i] = chat(prompts[0].lower())
    pool = Dataset.from_dict({"id": list(range(100, 130)), "messages": chats})
    path = tmp_path / "evals" / "mine.json"
    path.parent.mkdir()
    path.write_text(json.dumps([{"instruction": prompts[0], "id": 1}, {"prompt": prompts[1]}]))
    config = parse_select({"strategy": "random", "decontaminate": {"sets": [str(path)]}}, [])
    _, summary = select(pool, config, seed=0, output_dir=tmp_path / "out")
    decontamination = summary["decontamination"]
    assert decontamination["rows"] == 23 and len(decontamination["examples"]) == 20
    assert [e["id"] for e in decontamination["examples"][:3]] == [104, 107, 109]
    assert decontamination["examples"][1] == {"id": 107, "set": str(path), "ngram": "name three birds", "overlap": 1.0}
    assert summary["funnel"]["decontaminated"] == {"rows": 23, "by_set": {str(path): 23}}
    assert summary["counts"]["selected"] == 7


def test_prompt_file_fields(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"question": "q1"}\n\n{"turns": ["t1", "t2"]}\n{"prompt": "p", "instruction": "ignored"}\n')
    assert eval_prompts(str(path), "k") == ["q1", "t1", "t2", "p"]
    path.write_text('{"question": "q1"}\n{"text": "no prompt field"}\n')
    with pytest.raises(RecipeError, match=r"k \(.*prompts.jsonl\) line 2: no prompt: expected a string in one of"):
        eval_prompts(str(path), "k")


def recipe_problems(tmp_path, decontaminate) -> list[str]:
    recipe = {"output_dir": str(tmp_path / "out"), "pool": [{"path": str(ALPACA), "format": "alpaca"}],
              "select": {"strategy": "random", "budget": 5, "decontaminate": decontaminate}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    return caught.value.problems


def test_validate_names_each_problem(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    problems = recipe_problems(tmp_path, {
        "sets": ["mt-bench", "mt_bench", "mt_bench", str(tmp_path / "missing.jsonl"), str(tmp_path / "empty.jsonl"),
                 "evals/prompts.csv"],
        "ngram": 0, "min_overlap": 1.5, "embedding": {"model": "m", "threshold": 0}})
    assert problems == [
        "select.decontaminate.ngram: must be at least 1, got 0",
        "select.decontaminate.min_overlap: must be in (0, 1], got 1.5",
        "select.decontaminate.sets.0: unknown eval set 'mt-bench'; did you mean 'mt_bench'? known: alpaca_eval, "
        "mt_bench (or give a .jsonl or .json prompt file)",
        "select.decontaminate.sets.2: 'mt_bench' is listed twice",
        f"select.decontaminate.sets.3: file not found: {tmp_path / 'missing.jsonl'} (relative paths are read from the "
        "working directory)",
        f"select.decontaminate.sets.4: {str(tmp_path / 'empty.jsonl')!r} holds no prompt",
        "select.decontaminate.sets.5: 'evals/prompts.csv' is not a prompt file: give a .jsonl or .json file",
        "select.decontaminate.embedding.threshold: must be in (0, 1], got 0.0",
    ]
    assert recipe_problems(tmp_path, {"sets": ["mt_bench"], "ngrams": 8}) == [
        "select.decontaminate.ngrams: unknown key; did you mean 'ngram'? known: batch_rows, embedding, min_overlap, "
        "ngram, sets"]
    assert recipe_problems(tmp_path, {"ngram": 8}) == ["select.decontaminate.sets: required key is missing"]


def test_online_selection_refuses_decontaminate():
    problems: list[str] = []
    parse_select({"strategy": "top_k", "budget": 4, "decontaminate": {"sets": ["mt_bench"]}}, problems, "online.select")
    assert problems and problems[0].startswith("online.select.decontaminate: decontamination runs in the select stage")


def test_every_row_contaminated_stops_naming_decontamination(tmp_path):
    pool = Dataset.from_dict({"id": [0, 1], "messages": [chat(question(81)), chat(question(82))]})
    config = parse_select({"strategy": "random", "decontaminate": {"sets": ["mt_bench"]}}, [])
    with pytest.raises(UserError, match=r"decontaminated 2 \(mt_bench 2\), 0 left; every row overlaps an eval set"):
        select(pool, config, seed=0, output_dir=tmp_path)


def test_embedding_rule_agrees_with_a_brute_force_cosine(tiny_sentence_model):
    """On a tiny random encoder: a row is contaminated by the embedding rule exactly when one of its user turns has a
    cosine to some eval prompt at or above the threshold, and reports that prompt and similarity; a row the n-gram
    rule finds keeps its n-gram match. Row 5 is question 90 with every 10th word replaced (no 13-gram left)."""
    from sentence_transformers import SentenceTransformer

    chats = alpaca_chats()[:40]
    words = question(90).split()
    chats[5] = chat("Hello", " ".join("zebra" if i % 10 == 9 else w for i, w in enumerate(words)))
    chats[6] = chat(question(81))
    pool = Dataset.from_dict({"id": list(range(40)), "messages": chats})
    encoder = SentenceTransformer(str(tiny_sentence_model), device="cpu")
    prompts = eval_prompts("mt_bench", "k")
    turns = [(row, m["content"]) for row, c in enumerate(chats) for m in c if m["role"] == "user"]
    cosine = encoder.encode([text for _, text in turns], normalize_embeddings=True) @ encoder.encode(
        prompts, normalize_embeddings=True).T
    threshold = float(cosine[1].max()) - 1e-3  # turns[1] is row 5's second turn
    problems: list[str] = []
    config = parse_select({"strategy": "random", "decontaminate": {
        "sets": ["mt_bench"], "batch_rows": 16,
        "embedding": {"model": str(tiny_sentence_model), "threshold": threshold, "batch_size": 8}}}, problems)
    assert problems == [] and 0 < threshold < 1

    found = find_contamination(pool, config.decontaminate)
    best: dict[int, tuple[float, str]] = {}
    for (row, _), similarities in zip(turns, cosine, strict=True):
        if similarities.max() >= threshold and similarities.max() > best.get(row, (-1.0, ""))[0]:
            best[row] = (float(similarities.max()), prompts[int(similarities.argmax())])
    assert found.rows.tolist() == sorted(set(best) | {6}) and 5 in best
    for row, rule, score, match in zip(found.rows, found.rules, found.scores, found.matches, strict=True):
        if row == 6:
            assert rule == "ngram" and score == 1.0
        else:
            assert rule == "embedding" and score == pytest.approx(best[row][0], abs=1e-4) and match == best[row][1]


def test_editing_a_prompt_file_makes_the_selection_stale(tmp_path):
    from deita_train.plans import stage_plans
    from deita_train.sections import load_recipe

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Write a haiku about the autumn moon over a quiet lake at night please now"}\n')
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"instruction": "Say hi.", "output": "Hi."}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "pool": [{"path": str(pool)}],
                                      "select": {"strategy": "random", "decontaminate": {"sets": [str(prompts)]}}}))
    before = stage_plans(load_recipe(recipe))["select"].fingerprint
    prompts.write_text('{"prompt": "Name three rivers that flow through more than four countries in Europe today"}\n')
    assert stage_plans(load_recipe(recipe))["select"].fingerprint != before
