"""Training features from the recipe: LoRA SFT then DPO, resume from a checkpoint, QLoRA refusal on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from deita_train.cli.main import main
from deita_train.sections import load_recipe
from deita_train.training.config import PeftSection
from deita_train.training.peft_setup import quantization_config

from .conftest import REPO

SMALL = ["select.budget=16", "sft.num_train_epochs=1", "sft.logging_steps=1", "dpo.dataset.0.sample=8",
         "dpo.num_train_epochs=1", "dpo.max_length=128", "sft.max_length=128", "callbacks=[]"]


def run(tmp_path, tiny_model, *overrides) -> int:
    return main(["run", "recipes/quickstart/tiny-cpu.yaml", f"output_dir={tmp_path}", f"model.name_or_path={tiny_model}",
                 *SMALL, *overrides])


def test_lora_sft_then_dpo_trains_adapters_and_merges(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    assert run(tmp_path, tiny_model, "peft={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}") == 0
    for stage in ("sft", "dpo"):
        adapter = load_file(tmp_path / stage / "adapter" / "adapter_model.safetensors")
        assert adapter and all("lora_" in name for name in adapter)
        assert any(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)  # B starts at zero: it trained
        merged = load_file(tmp_path / stage / "model.safetensors")
        assert not any("lora_" in name for name in merged)  # merged, loadable without peft
    base = load_file(tiny_model / "model.safetensors")
    sft = load_file(tmp_path / "sft" / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q], sft[q])
    assert torch.equal(base["model.layers.0.mlp.up_proj.weight"], sft["model.layers.0.mlp.up_proj.weight"])
    assert json.loads((tmp_path / "report" / "run.json").read_text())["dpo"]["start_from"] == str(tmp_path / "sft")


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    sft_only = ["~dpo", "sft.save_strategy=steps", "sft.save_steps=2"]
    assert run(tmp_path, tiny_model, *sft_only, "sft.max_steps=4") == 0  # a run stopped after step 4
    assert json.loads((tmp_path / "sft" / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert run(tmp_path, tiny_model, *sft_only, "sft.max_steps=6", "sft.resume_from_checkpoint=true") == 0
    final = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())
    assert final["global_step"] == 6
    steps = [e["step"] for e in final["log_history"] if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-4 come from the checkpoint's state: it continued, not restarted


def test_resume_true_without_checkpoint_is_refused(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match="No valid checkpoint"):
        run(tmp_path, tiny_model, "~dpo", "sft.resume_from_checkpoint=true")


def test_qlora_says_what_is_missing_on_cpu():
    with pytest.raises(RuntimeError, match="QLoRA needs .*a CUDA GPU"):
        quantization_config(PeftSection(quantization="4bit"))


def test_peft_section_is_strict(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(Exception, match="peft.lora_dropuot: unknown key; did you mean 'lora_dropout'"):
        load_recipe("recipes/quickstart/tiny-cpu.yaml", [f"model.name_or_path={tiny_model}", "peft={lora_dropuot: 0.1}"])
