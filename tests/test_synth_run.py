"""`deita-train synth` end to end on CPU: the tiny model (with the test's own chat template) writes instructions,
answers and second turns; a judge served by a real local HTTP server answers the tag prompts as the test says
(some malformed on purpose); a tiny reward model rewards and pairs; a tiny sentence encoder finds repeats; filters
run; every count adds up. Then drop reasons counted exactly (an endpoint generator), resume after a kill, the
chain into select, and what validate refuses."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk
from transformers import AutoTokenizer

from deita_train.cli.main import main
from deita_train.data.config import SourceConfig
from deita_train.data.sources import load_sources
from deita_train.synth import phases
from deita_train.synth.safety import guard_prompt
from deita_train.synth.tags import TAGS, judge_prompt

from .completion_server import CompletionServer

TEMPLATE = "<s><|im_start|>user: "  # what the test's chat template (conftest.SYNTH_TEMPLATE) opens a user turn with
LABELS = {"difficulty": "easy", "input_quality": "good", "task_category": "Math"}


GUARD_ANSWERS = ["safe", "unsafe\nS1,S10", "maybe"]


def judge_answer(prompt: str, body: dict) -> list[tuple[str, str]]:
    """The judge: a label for two prompts in three (by the prompt's hash), malformed JSON for the third. The guard
    (served as `guard`): safe, unsafe with categories, or a malformed verdict, by the prompt's hash."""
    if body["model"] == "guard":
        return [(GUARD_ANSWERS[prompt_hash(prompt) % 3], "stop")]
    tag = next(tag for tag in ("task_category", "input_quality", "difficulty") if f'"{TAGS[tag].key}"' in prompt)
    if malformed(prompt):
        return [("this is not JSON", "stop")]
    return [(f' "{TAGS[tag].key}": "{LABELS[tag]}"}}', "stop")]


def prompt_hash(prompt: str) -> int:
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16)


def malformed(prompt: str) -> bool:
    return prompt_hash(prompt) % 3 == 0


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def synth_section(model: Path, **extra) -> dict:
    return {
        "generator": {"model": str(model), "backend": "transformers", "dtype": "float32", "batch_size": 16},
        "num_instructions": 24, "shard_size": 8, "turns": 2,
        "instruction": {"max_tokens": 24, "stop_at_newline": False},
        "response": {"temperature": 1.0, "max_tokens": 24},  # greedy, the stopping model mostly stops at once
        **extra,
    }


def arrow_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.arrow"))}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, stopping_model, tiny_reward_model, tiny_sentence_model):
    out = tmp_path_factory.mktemp("synth-full")
    reward = {"model": str(tiny_reward_model), "dtype": "float32"}
    with CompletionServer(judge_answer) as server:
        section = synth_section(
            stopping_model,
            tags={"judge": {"model": str(stopping_model), "backend": "endpoint", "base_url": server.base_url,
                            "served_model": "judge", "concurrency": 4, "timeout": 10},
                  "judge_max_tokens": 64, "reward": reward, "language": True,
                  "safety": {"model": str(stopping_model), "backend": "endpoint", "base_url": server.base_url,
                             "served_model": "guard"}},
            repetition={"model": str(tiny_sentence_model), "neighbors": 8},
            filters=["difficulty != 'hard'"],
            pairs={"responses": 3, "temperature": 0.8, "max_tokens": 24, "reward": reward},
        )
        recipe = write_recipe(out / "recipe.yaml", {"output_dir": str(out), "seed": 7, "synth": section})
        assert main(["synth", str(recipe)]) == 0
        requests = list(server.requests)
    return out, requests


def test_full_synth_run_counts_add_up(full_run):
    out, _ = full_run
    summary = json.loads((out / "synth" / "summary.json").read_text())
    dropped = summary["generated"]["dropped"]
    first_turn = sum(count for cause, count in dropped.items() if cause.startswith("turn 1:"))
    assert summary["generated"]["kept"] + first_turn == summary["requested"] == 24
    assert 0 < summary["generated"]["kept"] < 24  # the stopping model both stops and runs past max_tokens
    data = load_from_disk(str(out / "synth" / "data"))
    turns = Counter(data["turns"])
    later = sum(count for cause, count in dropped.items() if cause.startswith("turn 2:"))
    filters = summary["filters"][0]
    assert summary["generated"]["kept"] - summary["repetition"]["duplicates"] == filters["kept"] + filters["failed"] \
        + filters["null"]
    assert summary["rows"] == len(data) == filters["kept"]
    for messages, count in zip(data["messages"], data["turns"], strict=True):
        assert [m["role"] for m in messages] == ["user", "assistant"] * count and count in (1, 2)
    assert turns[1] <= later  # a second turn that failed ended its conversation at the first
    assert summary["shards"] == {"total": 3, "reused": {"generate": 0, "judge": 0, "safety": 0, "reward": 0,
                                                          "language": 0, "pairs": 0}}


def test_rows_carry_their_provenance(full_run):
    out, _ = full_run
    data = load_from_disk(str(out / "synth" / "data"))
    assert set(data["pre_query_template"]) == {TEMPLATE} and set(data["template_source"]) == {"derived"}
    assert set(data["backend"]) == {"transformers"} and len(set(data["model"])) == 1
    sampling = json.loads(data["sampling"][0])
    assert sampling["instruction"]["temperature"] == 1.0 and sampling["response"]["temperature"] == 1.0
    assert all(isinstance(seed, int) for seed in data["seed"])
    assert [row["instruction"] for row in data] == [row["messages"][0]["content"] for row in data]


def test_judge_tags_are_the_served_answers_and_malformed_ones_are_counted(full_run, stopping_model):
    out, requests = full_run
    tokenizer = AutoTokenizer.from_pretrained(stopping_model)
    data = load_from_disk(str(out / "synth" / "data"))
    for row in data:
        for tag, label in LABELS.items():
            bad = malformed(judge_prompt(tokenizer, tag, row["instruction"]))
            assert row[tag] == (None if bad else label) and row[f"{tag}_reason"] == ("invalid_json" if bad else None)
    summary = json.loads((out / "synth" / "summary.json").read_text())
    served_bad = Counter(next(t for t in ("task_category", "input_quality", "difficulty")
                              if f'"{TAGS[t].key}"' in body["prompt"]) for body in requests
                         if body["model"] == "judge" and malformed(body["prompt"]))
    assert summary["phases"]["judge"]["failed"] == {f"{tag}: invalid_json": n for tag, n in served_bad.items()}
    judged = [body for body in requests if body["model"] == "judge"]
    assert len(judged) == 3 * summary["generated"]["kept"]  # one request per tag per kept row


def test_guard_verdicts_are_parsed_strictly(full_run, stopping_model):
    out, requests = full_run
    tokenizer = AutoTokenizer.from_pretrained(stopping_model)
    data = load_from_disk(str(out / "synth" / "data"))
    expected = {0: ("safe", None, None), 1: ("unsafe", "S1,S10", None), 2: (None, None, "unknown_verdict")}
    for row in data:
        prompt = guard_prompt(tokenizer, row["instruction"], row["response"])
        assert (row["safety"], row["safety_categories"], row["safety_reason"]) == expected[prompt_hash(prompt) % 3]
    summary = json.loads((out / "synth" / "summary.json").read_text())
    bad = sum(1 for body in requests if body["model"] == "guard" and prompt_hash(body["prompt"]) % 3 == 2)
    assert summary["phases"]["safety"]["failed"] == ({"unknown_verdict": bad} if bad else {})


def test_filters_repetition_language_and_rewards_on_every_row(full_run):
    out, _ = full_run
    data = load_from_disk(str(out / "synth" / "data"))
    summary = json.loads((out / "synth" / "summary.json").read_text())
    assert data["difficulty"] == ["easy"] * len(data)  # a null fails the filter (counted as null), never passes
    assert summary["filters"][0]["failed"] == 0  # the judge never said hard
    assert not any(data["duplicate"]) and all(count >= 0 for count in data["repeat_count"])
    assert all((code is None) != (reason is None) for code, reason in zip(data["language"], data["language_reason"],
                                                                         strict=True))
    assert all((r is None) != (why is None) for r, why in zip(data["reward"], data["reward_reason"], strict=True))


def test_dpo_pairs_are_the_extremes_of_the_candidates(full_run):
    out, _ = full_run
    summary = json.loads((out / "synth" / "summary.json").read_text())
    pairs = load_from_disk(str(out / "synth" / "pairs"))
    data = load_from_disk(str(out / "synth" / "data"))
    assert summary["pairs"]["made"] == len(pairs) and set(pairs["id"]) <= set(data["id"])
    for row in pairs:
        assert row["chosen_reward"] > row["rejected_reward"]
        assert [m["role"] for m in row["prompt"]] == ["user"] and row["chosen"][0]["role"] == "assistant"
    made = sum(1 for chosen in data["chosen"] if chosen is not None)
    assert made == len(pairs)
    preferences, _ = load_sources([SourceConfig(path=str(out / "synth" / "pairs"), format="preference")], seed=0,
                                  preference=True)
    assert preferences["chosen"] == pairs["chosen"] and preferences["prompt"] == pairs["prompt"]  # what dpo reads
    assert made + sum(Counter(data["pair_reason"]).get(k, 0) for k in ("tie", "unscored", "empty")) == len(data)


def endpoint_generator(answers: list[tuple[str, str]]):
    """Instruction prompts (the template) get the given answers in turn; answer prompts get a fixed answer."""
    count = {"n": 0}

    def answer(prompt: str, body: dict) -> list[tuple[str, str]]:
        if prompt == TEMPLATE:
            count["n"] += 1
            return [answers[(count["n"] - 1) % len(answers)]]
        return [("Here is an answer.", "stop")]

    return answer


def test_drop_reasons_counted_exactly(tmp_path, stopping_model):
    answers = [("", "stop"), ("Write a haiku", "length"), (" <|im_start|>user: ", "stop"), ("Name a prime number.",
                                                                                             "stop")]
    with CompletionServer(endpoint_generator(answers)) as server:
        generator = {"model": str(stopping_model), "backend": "endpoint", "base_url": server.base_url,
                     "concurrency": 1}
        section = {"generator": generator, "num_instructions": 8, "shard_size": 4}
        recipe = write_recipe(tmp_path / "r.yaml", {"output_dir": str(tmp_path), "synth": section})
        assert main(["synth", str(recipe)]) == 0
    summary = json.loads((tmp_path / "synth" / "summary.json").read_text())
    assert summary["generated"] == {"kept": 2, "dropped": {"turn 1: instruction empty": 2,
                                                           "turn 1: instruction cut by max_tokens": 2,
                                                           "turn 1: instruction copies the template": 2}}
    data = load_from_disk(str(tmp_path / "synth" / "data"))
    assert data["instruction"] == ["Name a prime number."] * 2 and data["response"] == ["Here is an answer."] * 2


def test_nothing_kept_stops_with_the_counts(tmp_path, stopping_model, capsys):
    with CompletionServer(endpoint_generator([("", "stop")])) as server:
        generator = {"model": str(stopping_model), "backend": "endpoint", "base_url": server.base_url}
        recipe = write_recipe(tmp_path / "r.yaml", {"output_dir": str(tmp_path),
                                                    "synth": {"generator": generator, "num_instructions": 4}})
        assert main(["synth", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "no row left of 4 instructions; lost: 4 turn 1: instruction empty" in err
    assert json.loads((tmp_path / "synth" / "summary.json").read_text())["rows"] == 0


def test_killed_run_resumes_to_identical_output(tmp_path, stopping_model, monkeypatch):
    section = synth_section(stopping_model, tags={"tags": [], "language": True})
    clean = write_recipe(tmp_path / "clean.yaml", {"output_dir": str(tmp_path / "clean"), "synth": section})
    assert main(["synth", str(clean)]) == 0
    killed = write_recipe(tmp_path / "killed.yaml", {"output_dir": str(tmp_path / "killed"), "synth": section})
    original, calls = phases.GeneratePhase.run, []

    def dies_after_two(self, shard, rows):
        calls.append(shard)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return original(self, shard, rows)

    monkeypatch.setattr(phases.GeneratePhase, "run", dies_after_two)
    assert main(["synth", str(killed)]) == 130
    assert not (tmp_path / "killed" / "synth" / "data").exists()
    monkeypatch.setattr(phases.GeneratePhase, "run", original)
    assert main(["synth", str(killed)]) == 0
    summary = json.loads((tmp_path / "killed" / "synth" / "summary.json").read_text())
    assert summary["shards"]["reused"]["generate"] == 2
    assert arrow_bytes(tmp_path / "killed" / "synth" / "data") == arrow_bytes(tmp_path / "clean" / "synth" / "data")


def test_synth_chains_into_select_and_validate_accepts_the_future_pool(tmp_path, stopping_model):
    section = synth_section(stopping_model)
    recipe = write_recipe(tmp_path / "r.yaml", {
        "output_dir": str(tmp_path / "out"), "synth": section,
        "pool": [{"path": str(tmp_path / "out" / "synth" / "data")}],
        "select": {"strategy": "top_k", "score": "len(response)", "budget": 3},
    })
    assert main(["validate", str(recipe)]) == 0  # synth/data does not exist yet: the synth stage makes it
    assert main(["select", str(recipe)]) == 2  # nothing synthesized yet: refused, naming the command
    assert main(["run", str(recipe)]) == 0
    data = load_from_disk(str(tmp_path / "out" / "synth" / "data"))
    selected = load_from_disk(str(tmp_path / "out" / "selected"))
    longest = sorted((len(r), i) for i, r in enumerate(data["response"]))[::-1]
    assert [len(r) for r in selected["response"]] == [length for length, _ in longest[:3]]
    assert selected["source_id"] == [str(data["id"][i]) for _, i in sorted(longest[:3], key=lambda x: (-x[0], x[1]))]


@pytest.mark.parametrize(("section", "words"), [
    ({"filters": ["dificulty == 'easy'"], "tags": {"judge": {"model": "j"}}}, "no column 'dificulty'"),
    ({"tags": {"language": True}}, "synth.tags.judge: the tags difficulty, input_quality, task_category need a judge"),
    ({"pairs": {"responses": 1, "reward": {"model": "r"}}}, "synth.pairs.responses: must be at least 2"),
    ({"generator": {"model": "m", "backend": "endpoint"}}, "synth.generator.base_url: required"),
    ({"tags": {"tags": ["quality"], "judge": {"model": "j"}}}, "synth.tags.tags: unknown tag(s) 'quality'"),
    ({"tags": {"tags": [], "reward": {"model": "r", "batch_size": 8}}}, "synth.tags.reward.batch_size: unknown key"),
    ({"pairs": {"reward": {"model": "r", "max_length": 0}}}, "synth.pairs.reward.max_length: must be at least 1"),
])
def test_validate_refuses_bad_synth_sections(tmp_path, capsys, section, words):
    base = {"generator": {"model": "m"}} | section
    recipe = write_recipe(tmp_path / "r.yaml", {"output_dir": str(tmp_path), "synth": base})
    assert main(["validate", str(recipe)]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_write_what_one_does(tmp_path, stopping_model, tiny_reward_model):
    """Shards go to processes round-robin, but their seeds come from (seed, shard): 2 processes, same bytes."""
    import subprocess
    import sys

    reward = {"model": str(tiny_reward_model), "dtype": "float32"}
    section = synth_section(stopping_model, tags={"tags": [], "reward": reward, "language": True},
                            pairs={"responses": 3, "temperature": 0.8, "max_tokens": 24, "reward": reward})
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        recipe = write_recipe(tmp_path / f"p{processes}.yaml", {"output_dir": str(out), "synth": section})
        launch = ["--multi_gpu", "--num_processes", "2"] if processes == 2 else ["--num_processes", "1"]
        done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "deita_train",
                               "synth", str(recipe)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stderr.count("synthesized ") == processes  # each process logs the run it took part in
        outputs[processes] = out
    for part in ("data", "pairs"):
        assert arrow_bytes(outputs[2] / "synth" / part) == arrow_bytes(outputs[1] / "synth" / part)
    one = json.loads((outputs[1] / "synth" / "summary.json").read_text())
    two = json.loads((outputs[2] / "synth" / "summary.json").read_text())
    assert one["generated"] == two["generated"] and one["pairs"] == two["pairs"]


def test_shards_are_reused_only_by_the_configuration_that_made_them(tmp_path, stopping_model, caplog):
    section = synth_section(stopping_model, tags={"tags": [], "language": True})
    recipe = write_recipe(tmp_path / "r.yaml", {"output_dir": str(tmp_path), "synth": section})

    def reused() -> dict:
        return json.loads((tmp_path / "synth" / "summary.json").read_text())["shards"]["reused"]

    assert main(["synth", str(recipe)]) == 0 and reused() == {"generate": 0, "language": 0}
    with caplog.at_level(logging.INFO):
        assert main(["synth", str(recipe)]) == 0
    assert "synth: up to date, skipped" in caplog.text
    assert main(["synth", str(recipe), "synth.filters=['turns >= 1']"]) == 0  # a new assembly, the same shards
    assert reused() == {"generate": 3, "language": 3}
    assert main(["synth", str(recipe), "synth.response.max_tokens=20"]) == 0  # other answers: nothing reused
    assert reused() == {"generate": 0, "language": 0}
