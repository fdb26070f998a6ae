"""One `accelerate launch` of 2 CPU processes (gloo) runs score -> select -> SFT -> DPO under the shipped
accelerate configs (adapted to CPU: 2 processes, no bf16), matching a single-process run where it must."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml
from datasets import load_from_disk

from deita_train.cli.main import main

from .conftest import REPO

OVERRIDES = ["select.budget=32", "sft.num_train_epochs=1", "sft.logging_steps=1", "dpo.dataset.0.sample=16",
             "dpo.num_train_epochs=1", "dpo.logging_steps=1", "dpo.max_length=128", "sft.max_length=128"]


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("single")
    assert main(["run", str(REPO / "recipes/quickstart/tiny-cpu.yaml"), f"output_dir={out}",
                 f"model.name_or_path={tiny_model}", *OVERRIDES]) == 0
    return out


def cpu_config(name: str, tmp_path) -> str:
    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    path = tmp_path / f"{name}-cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_two_process_launch_matches_single_process(config, tmp_path, tiny_model, single_process_run, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cpu_config(config, tmp_path),
         "-m", "deita_train", "recipes/quickstart/tiny-cpu.yaml", f"output_dir={out}",
         f"model.name_or_path={tiny_model}", *OVERRIDES],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert load_from_disk(str(out / "selected"))["id"] == load_from_disk(str(single_process_run / "selected"))["id"]
    assert load_from_disk(str(out / "scored"))["length"] == load_from_disk(str(single_process_run / "scored"))["length"]
    sft = json.loads((out / "sft" / "trainer_state.json").read_text())
    assert sft["global_step"] == 2  # 32 rows / (8 per device x 2 processes): the data was split, not repeated
    assert all(math.isfinite(e["loss"]) for e in sft["log_history"] if "loss" in e)
    dpo = json.loads((out / "dpo" / "trainer_state.json").read_text())
    assert dpo["global_step"] == 1 and all(math.isfinite(e["loss"]) for e in dpo["log_history"] if "loss" in e)
    assert (out / "dpo" / "model.safetensors").is_file()
    assert done.stdout.count("selected: ") == 1  # only the main process reports


@pytest.mark.slow
def test_eval_during_training_under_zero3(tmp_path, tiny_model, monkeypatch):
    """ZeRO-3 partitions the weights: held-out loss, generation (gathered parameters) and TRL's own evaluation on an
    `eval_split` must run on both processes together and finish."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    heldout = "{path: recipes/quickstart/data/alpaca_cleaned_400.jsonl, format: alpaca, limit: 4}"
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cpu_config("deepspeed_zero3", tmp_path),
         "-m", "deita_train", "recipes/quickstart/tiny-cpu.yaml", f"output_dir={out}",
         f"model.name_or_path={tiny_model}", *OVERRIDES, "~dpo", "sft.eval_split=8", "sft.eval_strategy=steps",
         "sft.eval_steps=1", f"callbacks=[{{name: eval, every_steps: 1, at_end: false, num_prompts: 2, "
         f"max_new_tokens: 4, batch_size: 2, dataset: [{heldout}]}}]"],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    generations = [json.loads(line) for line in (out / "sft" / "eval" / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in generations] == [1, 1, 2, 2]  # 24 train rows / (8 x 2 processes) = 2 steps
    assert all(isinstance(g["answer"], str) for g in generations)
    log = json.loads((out / "sft" / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in log if "eval_loss" in e] == [1, 2]
    assert all(math.isfinite(e["eval_loss"]) for e in log if "eval_loss" in e)
