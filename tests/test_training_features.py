"""Training features from the recipe: packing/Liger/eval preconditions, eval during training, the dataset card
and the hub push of the selected rows."""

from __future__ import annotations

import importlib.util
import json

import pytest
from datasets import Dataset
from huggingface_hub import DatasetCard

from deita_train.cli.main import main
from deita_train.recipe.errors import RecipeError
from deita_train.sections import load_recipe
from deita_train.selection import publish
from deita_train.selection.config import HubSection
from deita_train.training.config import SFTStage
from deita_train.training.eval_data import hold_out

from .conftest import REPO
from .test_training import SMALL

QUICKSTART = "recipes/quickstart/tiny-cpu.yaml"


def problems_of(tiny_model, *overrides) -> list[str]:
    with pytest.raises(RecipeError) as error:
        load_recipe(REPO / QUICKSTART, [f"model.name_or_path={tiny_model}", *overrides])
    return error.value.problems


@pytest.mark.parametrize("flag", ["packing", "padding_free"])
def test_packing_without_flash_attention_is_refused(tiny_model, monkeypatch, flag):
    monkeypatch.chdir(REPO)
    (problem,) = problems_of(tiny_model, f"sft.{flag}=true")
    assert problem.startswith(f"sft.{flag}: needs a FlashAttention implementation")
    assert "the default (sdpa)" in problem and "flash_attention_2" in problem

def test_dpo_padding_free_without_flash_attention_is_refused(tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    (problem,) = problems_of(tiny_model, "dpo.padding_free=true", "model.attn_implementation=sdpa")
    assert problem.startswith("dpo.padding_free: needs a FlashAttention implementation, but model.attn_implementation "
                              "is sdpa")


def test_packing_with_flash_attention_passes_validation(tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(QUICKSTART, [f"model.name_or_path={tiny_model}", "sft.packing=true",
                                      "model.attn_implementation=flash_attention_2"])
    assert recipe.sft.args["packing"] is True


def test_packing_is_refused_at_train_time_too(tmp_path, tiny_model, monkeypatch):
    """A programmatic call that skips the recipe loader still never trains on cross-attending packed rows."""
    from deita_train.training.config import ModelConfig
    from deita_train.training.sft import train_sft

    rows = Dataset.from_list([{"id": 0, "messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "hello"}]}])
    stage = SFTStage(args={"packing": True, "use_cpu": True, "max_steps": 1})
    with pytest.raises(ValueError, match="sft.packing: needs a FlashAttention implementation, .* is sdpa"):
        train_sft(rows, ModelConfig(str(tiny_model), chat_template="vicuna_v1.1"), stage, tmp_path, 42)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="liger-kernel is installed")
def test_liger_without_the_package_says_how_to_install_it(tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    (problem,) = problems_of(tiny_model, "sft.use_liger_kernel=true")
    assert problem == ("sft.use_liger_kernel: the liger-kernel package is not installed: pip install liger-kernel, "
                       "or remove sft.use_liger_kernel")


@pytest.mark.parametrize(("overrides", "expected"), [
    (["sft.eval_strategy=steps"], "sft.eval_strategy: is steps, but the sft stage has no eval data"),
    (["sft.eval_split=1.5"], "sft.eval_split: a fraction in (0, 1) or a row count >= 1, got 1.5"),
    (["sft.eval_split=0"], "sft.eval_split: a fraction in (0, 1) or a row count >= 1, got 0"),
    (["dpo.eval_split=0.1", "dpo.eval_dataset=[{path: recipes/quickstart/data/preference_300.jsonl}]"],
     "dpo: set eval_dataset or eval_split, not both"),
    (["sft.eval_dataset=[{path: missing.jsonl}]"], "sft.eval_dataset.0.path: "),
    (["hub={dataset_id: me/x}", "~select"], "hub.dataset_id: pushes the selected dataset, but the recipe has no"),
])
def test_eval_and_hub_problems_name_their_key(tiny_model, monkeypatch, overrides, expected):
    monkeypatch.chdir(REPO)
    assert any(p.startswith(expected) for p in problems_of(tiny_model, *overrides))


def conversations(n: int) -> Dataset:
    return Dataset.from_list([{"id": i, "messages": [{"role": "user", "content": str(i)}]} for i in range(n)])


def test_hold_out_is_seeded_and_keeps_the_train_order():
    train, held, report = hold_out(conversations(20), SFTStage(eval_split=0.25), "sft", seed=3)
    assert len(held) == 5 and len(train) == 15 and report == {"eval_rows": 5, "eval_split": 0.25}
    assert train["id"] == sorted(train["id"]) and set(train["id"]).isdisjoint(held["id"])
    assert hold_out(conversations(20), SFTStage(eval_split=5), "sft", seed=3)[1]["id"] == held["id"]
    assert hold_out(conversations(20), SFTStage(eval_split=5), "sft", seed=4)[1]["id"] != held["id"]
    with pytest.raises(ValueError, match="sft.eval_split: 20 holds out 20 of 20 train rows"):
        hold_out(conversations(20), SFTStage(eval_split=20), "sft", seed=3)


def test_sft_and_dpo_evaluate_during_training(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["run", QUICKSTART, f"output_dir={tmp_path}", f"model.name_or_path={tiny_model}", *SMALL,
                 "sft.eval_split=4", "sft.eval_strategy=steps", "sft.eval_steps=1", "sft.per_device_eval_batch_size=4",
                 "dpo.eval_dataset=[{path: recipes/quickstart/data/preference_300.jsonl, format: preference, limit: 4}]",
                 "dpo.eval_strategy=epoch"])
    assert code == 0
    report = json.loads((tmp_path / "report" / "run.json").read_text())
    assert report["sft"]["rows"] == 12 and report["sft"]["eval_rows"] == 4  # budget 16, 4 held out
    sft_log = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())["log_history"]
    sft_evals = [e for e in sft_log if "eval_loss" in e]
    assert len(sft_evals) == report["sft"]["global_step"]  # eval_steps=1: one evaluation per optimizer step
    assert all(e["eval_loss"] > 0 for e in sft_evals)
    final = json.loads((tmp_path / "sft" / "eval_results.json").read_text())
    assert final["eval_loss"] == sft_evals[-1]["eval_loss"] > 0  # the last step's evaluation, not run twice
    dpo_evals = [e for e in json.loads((tmp_path / "dpo" / "trainer_state.json").read_text())["log_history"]
                 if "eval_loss" in e]
    assert dpo_evals and "eval_rewards/margins" in dpo_evals[0]


def test_eval_data_without_an_eval_strategy_is_evaluated_once_at_the_end(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["run", QUICKSTART, f"output_dir={tmp_path}", f"model.name_or_path={tiny_model}", *SMALL, "~dpo",
                 "sft.eval_split=4"])
    assert code == 0
    log = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())["log_history"]
    assert not [e for e in log if "eval_loss" in e]  # eval_strategy "no": nothing during training
    assert json.loads((tmp_path / "sft" / "eval_results.json").read_text())["eval_loss"] > 0


def test_the_selection_writes_a_dataset_card(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["select", QUICKSTART, f"output_dir={tmp_path}", f"model.name_or_path={tiny_model}", "~score",
                 "select={strategy: random, budget: 7, filters: ['input != \"\"']}"])
    assert code == 0
    card = DatasetCard.load(tmp_path / "report" / "dataset_card.md")
    assert "deita-train" in card.data.tags and card.data.task_categories == ["text-generation"]
    text = card.text
    assert "| `recipes/quickstart/data/alpaca_cleaned_400.jsonl` | alpaca | train | all |" in text
    assert "Strategy `random`: budget=7" in text
    summary = json.loads((tmp_path / "selection.json").read_text())
    kept = summary["filters"][0]["kept"]
    assert f"| filter `input != \"\"` | {kept} |" in text and "| selected | 7 |" in text and "| pool | 400 |" in text
    record = json.loads((tmp_path / "report" / "run.json").read_text())  # the card's provenance is the record's
    assert f"| transformers | {record['versions']['transformers']} |" in text and "| git commit |" in text


def test_push_selected_uploads_the_rows_then_the_card(monkeypatch):
    """The hub is out of reach here: record what would be sent through datasets' and huggingface_hub's own calls."""
    sent = []
    monkeypatch.setattr(Dataset, "push_to_hub", lambda self, repo, **kw: sent.append(("rows", repo, len(self), kw)))
    written_by_datasets = DatasetCard("---\ndataset_info:\n  features: []\nconfigs:\n- config_name: default\n---\nx")
    monkeypatch.setattr(DatasetCard, "load", classmethod(lambda cls, repo, **kw: written_by_datasets))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo, **kw: sent.append(("card", repo, self, kw)))
    ours = DatasetCard("---\ntags:\n- deita-train\n---\n\n# selected\n")
    publish.push_selected(conversations(3), ours, HubSection(dataset_id="me/sel", private=False))
    (kind, repo, rows, options), (card_kind, card_repo, card, card_options) = sent
    assert (kind, repo, rows, options["private"]) == ("rows", "me/sel", 3, False)
    assert (card_kind, card_repo, card_options["repo_type"]) == ("card", "me/sel", "dataset")
    assert card.data.tags == ["deita-train"] and card.data.configs == [{"config_name": "default"}]
    assert card.text.strip() == "# selected"


def test_dpo_with_precomputed_reference_log_probs(tmp_path, tiny_model, monkeypatch):
    """TRL computes the reference log-probs once before training, so no reference model is kept in memory."""
    monkeypatch.chdir(REPO)
    code = main(["run", QUICKSTART, f"output_dir={tmp_path}", f"model.name_or_path={tiny_model}", "~score", "~select",
                 "~sft", "callbacks=[]", "dpo.dataset.0.sample=8", "dpo.num_train_epochs=1", "dpo.max_length=128",
                 "dpo.precompute_ref_log_probs=true", "dpo.logging_steps=1"])
    assert code == 0
    log = json.loads((tmp_path / "dpo" / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses and all(loss == loss and loss > 0 for loss in losses)  # finite, positive
    assert json.loads((tmp_path / "report" / "run.json").read_text())["dpo"]["start_from"] == str(tiny_model)
