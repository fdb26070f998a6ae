"""Trust: an ordinary mistake never gives a wrong or empty result with exit 0. Each case is refused before any model
loads with one message naming the key or record (exit 2, no traceback), or the run finishes and says what fell short.

The table: a case writes its files into a temporary folder (the working directory), runs the commands in `before`
(each must exit 0), then its own command, and checks the exit code, the words of stderr (or the log), and what the
run left on disk. After it, what is not a row of the table: how the CLI ends (user errors, --debug, the other
processes of a launch, Ctrl-C), file modes, no `datasets` cache files in published folders, each model's own
`trust_remote_code`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, load_from_disk

from deita_train import processes
from deita_train.cli import main as cli
from deita_train.cli.main import main
from deita_train.data.sources import DataError
from deita_train.processes import MainProcessError, MainProcessUserError, on_main_process
from deita_train.recipe.errors import RecipeError
from deita_train.scoring.engine import ScoringInterrupted
from deita_train.sections import load_recipe
from deita_train.storage import load_dataset_dir, save_dataset, write_json

from .conftest import QUICKSTART_DATA, REPO

ROWS = [json.loads(line) for line in (QUICKSTART_DATA / "alpaca_cleaned_400.jsonl").read_text().splitlines()[:40]]


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def base_recipe(model: Path) -> dict:
    """pool.jsonl (40 real Alpaca rows) -> length -> top_k 10 -> a tiny SFT; paths relative to the case folder."""
    return {
        "output_dir": "out",
        "model": {"name_or_path": str(model), "dtype": "float32", "chat_template": "vicuna_v1.1"},
        "pool": [{"path": "pool.jsonl", "format": "alpaca"}],
        "score": {"length": {"type": "length"}},
        "select": {"strategy": "top_k", "score": "length", "budget": 10},
        "sft": {"max_length": 128, "max_steps": 1, "per_device_train_batch_size": 2, "save_strategy": "no",
                "use_cpu": True, "report_to": "none"},
    }


def child(select: dict) -> str:
    """A recipe that extends the base and sets `select`."""
    return yaml.safe_dump({"extends": "recipe.yaml", "select": select})


@dataclass
class Case:
    name: str
    command: str  # validate | run | score | select | train
    overrides: list[str] = field(default_factory=list)
    code: int = 2
    words: list[str] = field(default_factory=list)  # in stderr when code != 0, else in the log
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the case folder (pool.jsonl: ROWS)
    recipe: str = "recipe.yaml"
    before: list[list[str]] = field(default_factory=list)  # commands (with their overrides) run first
    check: Callable[[Path], None] | None = None  # on the case folder, after the command


def report(folder: Path) -> dict:
    return json.loads((folder / "out" / "report" / "run.json").read_text())


def selection(folder: Path) -> dict:
    return json.loads((folder / "out" / "selection.json").read_text())


def no_budget_inherited(folder: Path) -> None:
    recipe = load_recipe(folder / "dedup.yaml")
    assert recipe.select.strategy == "dedup" and recipe.select.options.budget is None


def one_line_skipped(folder: Path) -> None:
    (source,) = report(folder)["pool"]["sources"]
    assert source["read"] == 40 and source["kept"] == 39 and len(source["skipped"]) == 1
    assert "line 3" in source["skipped"][0]["where"]


def rows_trace_back(folder: Path) -> None:
    selected = load_from_disk(str(folder / "out" / "selected"))
    lines = (folder / "pool.jsonl").read_bytes().splitlines()
    for row in selected:
        assert row["source_file"] == "pool.jsonl"
        assert json.loads(lines[row["source_row"] - 1])["output"] == row["output"]  # source_row: the 1-based line


def empty_answers_unscorable(folder: Path) -> None:
    scored = load_from_disk(str(folder / "out" / "scored"))
    empty = [row for row in scored if not row["output"].strip()]
    assert len(empty) == 2 and all(row["loss"] is None and row["loss_reason"] == "empty answer" for row in empty)
    assert report(folder)["score"]["loss"]["unscorable"] == {"empty answer": 2}


def run_json_keeps_earlier_stages(folder: Path) -> None:
    run = report(folder)
    assert {"pool", "score", "select"} <= run.keys()
    assert run["stages"]["score"]["status"] == "ran" and run["stages"]["select"]["status"] == "ran"


def earlier_selection_not_trained_on(folder: Path) -> None:
    assert (folder / "out" / "selected").is_dir()  # the earlier output is kept, but its manifest is gone
    assert main(["train", "recipe.yaml", "select.filters=['len(output) > 100000']"]) == 2


def shortfall_recorded(folder: Path) -> None:
    funnel = selection(folder)["funnel"]
    assert funnel["selected"] == 40 and funnel["shortfall"] == 960


BAD_BYTE = jsonl(ROWS[:2]).encode() + b'{"instruction": "caf\xe9", "input": "", "output": "x"}\n' + jsonl(ROWS[3:]).encode()
EMPTY_ANSWERS = jsonl([{**ROWS[0], "output": ""}, *ROWS[1:5], {**ROWS[5], "output": "  \n"}])
MIXED = jsonl([{**ROWS[0], "rating": 3}, {**ROWS[1], "rating": "high"}, *ROWS[2:5]])

CASES = [
    # value ranges, refused by validate
    Case("budget below zero", "validate", ["select.budget=-5"], words=["select.budget: must be at least 1 (the rows to keep), got -5"]),
    Case("budget zero", "validate", ["select.budget=0"], words=["select.budget: must be at least 1 (the rows to keep), got 0"]),
    Case("deita threshold above 1", "validate", ["select={strategy: deita, score: length, embedding: length, "
                                                 "threshold: 2.0}"], words=["select.threshold: must be in (-1, 1)"]),
    Case("deita threshold -1", "validate", ["select={strategy: deita, score: length, embedding: length, "
                                            "threshold: -1}"], words=["select.threshold: must be in (-1, 1)", "got -1"]),
    Case("threshold min above max", "validate", ["select={strategy: threshold, score: length, min: 5, max: 1}"],
         words=["select.min: 5.0 is above max (1.0)"]),
    Case("dedup radius 0", "validate", ["select={strategy: dedup, embedding: length, radius: 0}"],
         words=["select.radius: must be above 0"]),
    Case("superfilter fraction above 1", "validate", ["select={strategy: superfilter, score: length, fraction: 1.5}"],
         words=["select.fraction: must be in (0, 1], got 1.5"]),
    Case("source limit below 1", "validate", ["pool.0.limit=-3"], words=["pool.0.limit: must be at least 1, got -3"]),
    Case("scorer batch_tokens 0", "validate", ["score.loss={type: loss, batch_tokens: 0}"],
         words=["score.loss.batch_tokens: must be at least 1, got 0"]),
    # a strategy changed through extends or an override starts from its own defaults
    Case("extends: facility_location does not inherit top_k's score", "validate", recipe="facility.yaml",
         files={"facility.yaml": child({"strategy": "facility_location", "budget": 5})},
         words=["select.score: 'mean(ifd)': no column 'ifd'", "select.embedding: no column 'embedding'"]),
    Case("extends: dedup does not inherit top_k's budget", "validate", recipe="dedup.yaml", code=0,
         files={"dedup.yaml": child({"strategy": "dedup", "embedding": "length"})}, check=no_budget_inherited),
    Case("override: superfilter does not inherit top_k's budget", "validate", ["select.strategy=superfilter"],
         words=["select: give exactly one of `budget` (a count) or `fraction`"]),
    # expressions compiled and resolved by validate
    Case("score expression typo", "validate", ["select.score=lenght"],
         words=["select.score: 'lenght': no column 'lenght'; did you mean 'length'?"]),
    Case("filter calls open", "validate", ["select.filters=[\"open('x') is None\"]"],
         words=["select.filters.0", "calling 'open'", "is not allowed"]),
    Case("filter on a missing column", "validate", ["select.filters=['quality > 3']"],
         words=["select.filters.0: 'quality > 3': no column 'quality'"]),
    Case("huge power", "validate", ["select.filters=['9**9**9 > 0']"], words=["select.filters.0", "integer limit"]),
    Case("huge repetition", "validate", ["select.filters=[\"len('a' * 10**9) > 0\"]"],
         words=["select.filters.0", "length limit"]),
    Case("float overflow", "validate", ["select.filters=['2.0 ** 10000 > 0']"],
         words=["select.filters.0", "overflows a float"]),
    # paths and TRL values
    Case("local-looking missing path", "validate", ["pool.0.path=data/mydata"], files={"data/keep": ""},
         words=["pool.0.path: file not found: data/mydata"]),
    Case("YAML no for a string field", "validate", ["sft.save_strategy=no"],
         words=["sft.save_strategy", "got bool False", "quote the word"]),
    # inputs, at run time
    Case("non-UTF-8 byte", "score", files={"pool.jsonl": BAD_BYTE}, words=["pool.jsonl", "line 3", "UTF-8"]),
    Case("non-UTF-8 byte skipped", "score", ["pool.0.on_error=skip"], code=0, files={"pool.jsonl": BAD_BYTE},
         check=one_line_skipped),
    Case("empty file", "score", files={"pool.jsonl": ""}, words=["pool.jsonl", "no records", "empty"]),
    Case("field typed differently", "score", files={"pool.jsonl": MIXED}, words=["'rating'", "line 2"]),
    Case("empty answers are unscorable, not fatal", "score", ["score={loss: {type: loss, max_length: 128}}",
                                                             "~select", "~sft"], code=0,
         files={"pool.jsonl": EMPTY_ANSWERS}, check=empty_answers_unscorable),
    Case("rows trace back to their line after skips", "run", ["pool.0.on_error=skip", "~sft"], code=0,
         files={"pool.jsonl": BAD_BYTE}, check=rows_trace_back),
    # selections that say what they did
    Case("empty selection", "run", ["select.filters=['len(output) > 100000']", "~sft"],
         words=["no row selected", "select.filters.0"]),
    Case("a failed selection leaves nothing to train on", "select", ["select.filters=['len(output) > 100000']"],
         before=[["score"], ["select"]], words=["no row selected"], check=earlier_selection_not_trained_on),
    Case("budget not reached", "run", ["select.budget=1000", "~sft"], code=0,
         words=["budget not reached: selected 40 of 1000"], check=shortfall_recorded),
    # stages as a build
    Case("select alone without scored/", "select", words=["scored does not exist", "deita-train score"]),
    Case("train on a selection made with another budget", "train", ["select.budget=5"],
         before=[["score"], ["select"]], words=["selected was made by another configuration", "select (section)",
                                               "deita-train select recipe.yaml select.budget=5"]),
    Case("an up-to-date stage is skipped", "score", before=[["score"]], code=0,
         words=["score: up to date, skipped"]),
    Case("select alone keeps what score recorded", "select", before=[["score"]], code=0,
         check=run_json_keeps_earlier_stages),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_trust(case: Case, tiny_model, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(base_recipe(tiny_model)))
    files = {"pool.jsonl": jsonl(ROWS)} | case.files
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    for command, *overrides in case.before:
        assert main([command, "recipe.yaml", *overrides]) == 0, capsys.readouterr().err
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main([case.command, case.recipe, *case.overrides])
    err = capsys.readouterr().err
    assert code == case.code, err
    said = err if code != 0 else caplog.text
    for words in case.words:
        assert words in said, f"{words!r} not in:\n{said}"
    assert "Traceback" not in err
    if case.check is not None:
        case.check(tmp_path)


# -- how the CLI ends, and what it leaves on disk ------------------------------------------------------------

RESUME = "re-run the same command to resume"
NOTED = DataError("no rows")
NOTED.add_note("score.ifd (ifd): while scoring the shard of records with ids [3]")


def write_recipe(path: Path, output_dir: Path, model: Path, score: dict | None = None) -> Path:
    """A score-only recipe on the quickstart pool."""
    recipe = {
        "output_dir": str(output_dir),
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "pool": [{"path": str(QUICKSTART_DATA / "alpaca_cleaned_400.jsonl"), "format": "alpaca"}],
        "score": score or {"length": {"type": "length"}},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def fail_with(monkeypatch, error: BaseException) -> None:
    """Make the command raise `error`, as a stage would at run time."""

    def raises(*_):
        raise error

    monkeypatch.setattr(cli, "dispatch", raises)


def test_a_user_error_at_run_time_prints_its_message_alone_and_exits_2(tiny_model, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "out", tiny_model)
    recipe.write_text(recipe.read_text().replace(str(QUICKSTART_DATA / "alpaca_cleaned_400.jsonl"), str(broken)))
    assert main(["run", str(recipe)]) == 2
    assert capsys.readouterr().err == (f"{broken} (line 2): not valid JSON: Expecting value at column 1; "
                                       "fix the record, or set on_error: skip\n")
    for argv in (["--debug", "run", str(recipe)], ["run", str(recipe), "--debug"]):
        with pytest.raises(DataError):
            main(argv)


def test_a_recipe_error_lists_its_problems(tiny_model, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "out", tiny_model)
    assert main(["validate", str(recipe), "seed=x", "sft.nope=1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{recipe}: 2 problem(s):" and len(err) == 3 and all(line.startswith("  ") for line in err[1:])


@pytest.mark.parametrize("error, code, message", [
    (RecipeError(["score.x.type: unknown", "seed: expected int"]), 2,
     "recipe.yaml: 2 problem(s):\n  score.x.type: unknown\n  seed: expected int\n"),
    (NOTED, 2, "no rows\nscore.ifd (ifd): while scoring the shard of records with ids [3]\n"),
    (MainProcessUserError("selection failed on the main process: DataError: no rows\nline two"), 2,
     "selection failed on the main process: DataError: no rows\nline two\n"),
    (KeyboardInterrupt(), 130, f"interrupted; {RESUME}\n"),
    (ScoringInterrupted(3, 10), 130, f"interrupted: 3 of 10 shards kept; {RESUME}\n"),
])
def test_user_errors_and_interrupts_end_with_one_message(monkeypatch, capsys, error, code, message):
    fail_with(monkeypatch, error)
    assert main(["run", "recipe.yaml"]) == code
    assert capsys.readouterr().err == message
    with pytest.raises(type(error)):
        main(["--debug", "run", "recipe.yaml"])


@pytest.mark.parametrize("error", [MainProcessError("selection failed on the main process: KeyError: 'x'"),
                                   ZeroDivisionError("division by zero")])
def test_programming_errors_keep_their_traceback(monkeypatch, error):
    fail_with(monkeypatch, error)
    with pytest.raises(type(error)):
        main(["run", "recipe.yaml"])


class FakeState:
    num_processes = 2

    def __init__(self, is_main_process: bool) -> None:
        self.is_main_process = is_main_process


@pytest.mark.parametrize("failure, kind", [(DataError("no rows"), MainProcessUserError),
                                           (KeyError("x"), MainProcessError)])
def test_other_processes_learn_whether_the_main_process_failure_was_the_users(monkeypatch, failure, kind):
    sent = []
    monkeypatch.setattr(processes, "broadcast_object_list", lambda outcome: sent.append(outcome) or sent[0])
    monkeypatch.setattr(processes, "process_state", lambda: FakeState(is_main_process=True))

    def task():
        raise failure

    with pytest.raises(type(failure)):
        on_main_process(task, "selection")
    monkeypatch.setattr(processes, "process_state", lambda: FakeState(is_main_process=False))
    with pytest.raises(kind) as raised:
        on_main_process(task, "selection")  # receives what the main process sent
    assert type(raised.value) is kind
    assert str(raised.value).startswith(f"selection failed on the main process: {type(failure).__name__}: ")


def test_ctrl_c_while_scoring_exits_130_with_the_shards_kept(tiny_model, tmp_path):
    out = tmp_path / "out"
    score = {"ifd": {"type": "ifd", "dtype": "float32", "shard_size": 2}}
    recipe = write_recipe(tmp_path / "recipe.yaml", out, tiny_model, score)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "deita_train", "score", str(recipe)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any((out / "scored_shards").rglob("*.done")) and process.poll() is None:
        assert time.monotonic() < deadline, "no shard finished within 60 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    kept, total = map(int, re.fullmatch(rf"interrupted: (\d+) of (\d+) shards kept; {RESUME}",
                                        err.strip().splitlines()[-1]).groups())
    assert 1 <= kept < total == 200 and kept == len(list((out / "scored_shards").rglob("*.done")))


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o007, 0o660, 0o770)])
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "report" / "run.json", {"a": 1})
        save_dataset(Dataset.from_dict({"id": [1, 2]}), tmp_path / "selected")
        save_dataset(Dataset.from_dict({"id": [3]}), tmp_path / "selected")  # replacing goes through the same path
    finally:
        os.umask(previous)
    paths = [tmp_path / "report" / "run.json", tmp_path / "report", tmp_path / "selected",
             *(tmp_path / "selected").iterdir()]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in paths}
    assert modes == {path.name: folder_mode if path.is_dir() else file_mode for path in paths}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "selected"]  # no staging left behind


def test_transforms_of_a_loaded_output_write_no_cache_files_into_it(tmp_path):
    save_dataset(Dataset.from_dict({"id": list(range(10)), "text": ["x" * i for i in range(10)]}), tmp_path / "selected")
    contents = sorted(p.name for p in (tmp_path / "selected").iterdir())
    dataset = load_dataset_dir(tmp_path / "selected")
    mapped = dataset.map(lambda row: {"n": len(row["text"])}).filter(lambda row: row["n"] > 2)
    assert mapped["id"] == list(range(3, 10)) and dataset.cache_files == []
    assert sorted(p.name for p in (tmp_path / "selected").iterdir()) == contents == [
        "data-00000-of-00001.arrow", "dataset_info.json", "state.json"]


def test_each_model_has_its_own_trust_remote_code(tiny_model, tmp_path, monkeypatch):
    """`model.trust_remote_code` is the trained model's alone: the length scorer's tokenizer and `dpo.model` load
    with their own flag (default false)."""
    from deita_train.scoring import length
    from deita_train.scoring.base import ScoringContext
    from deita_train.training import models

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool.jsonl").write_text(jsonl(ROWS))
    recipe = base_recipe(tiny_model) | {"dpo": {"model": str(tiny_model), "dataset": [
        {"path": str(QUICKSTART_DATA / "preference_300.jsonl"), "format": "preference"}]}}
    recipe["model"]["trust_remote_code"] = True
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(tmp_path / "recipe.yaml")
    assert loaded.model.trust_remote_code and not loaded.score["length"].trust_remote_code
    assert not loaded.dpo.trust_remote_code
    assert load_recipe(tmp_path / "recipe.yaml", ["score.length.trust_remote_code=true"]).score["length"].trust_remote_code
    asked = []
    monkeypatch.setattr(models, "load_tokenizer", lambda name, trust_remote_code=False: asked.append(trust_remote_code))
    length.LengthScorer(loaded.score["length"], ScoringContext(model_name_or_path=str(tiny_model))).load()
    assert asked == [False]
