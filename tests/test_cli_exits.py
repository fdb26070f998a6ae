"""How the CLI ends (user errors, Ctrl-C), and what `storage` leaves on disk (modes, no `datasets` cache files)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from deita_train import processes
from deita_train.cli import main as cli
from deita_train.cli.main import main
from deita_train.data.sources import DataError
from deita_train.processes import MainProcessError, MainProcessUserError, on_main_process
from deita_train.recipe.errors import RecipeError
from deita_train.scoring.engine import ScoringInterrupted
from deita_train.storage import load_dataset_dir, save_dataset, write_json

from .conftest import QUICKSTART_DATA, REPO

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
