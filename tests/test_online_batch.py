"""Per-batch selection (`online.every: batch`): each step keeps exactly the top 1/k of its draw by the training loss,
as computed separately; gradient accumulation counts kept rows; the options are checked."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from deita_train.cli.main import main
from deita_train.online import batch_selection
from deita_train.online.batch_selection import BatchSelectingSFTTrainer

from .conftest import REPO

RECIPE = "recipes/quickstart/online-cpu.yaml"
BATCH = ["~dpo", "~score", "~select", "callbacks=[]", "pool.0.limit=48", "sft.max_length=96",
         "online={every: batch, batch_ratio: 3}", "sft.per_device_train_batch_size=4", "sft.logging_steps=1",
         "sft.num_train_epochs=1"]


def run(out, tiny_model, *overrides) -> int:
    return main(["run", RECIPE, f"output_dir={out}", f"model.name_or_path={tiny_model}", *BATCH, *overrides])


def kept_batches(monkeypatch) -> list[tuple[dict, dict]]:
    """Every (drawn batch, kept batch) pair `keep_top` sees from now on, the drawn one copied before selection."""
    seen = []
    original = BatchSelectingSFTTrainer.keep_top

    def recording(self, batch):
        drawn = {name: value.clone() for name, value in batch.items() if torch.is_tensor(value)}
        kept = original(self, batch)
        seen.append((drawn, kept))
        return kept

    monkeypatch.setattr(BatchSelectingSFTTrainer, "keep_top", recording)
    return seen


def losses(model, batch) -> torch.Tensor:
    """Each row's mean loss-token NLL, computed here without the trainer."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2).float(), labels.clamp_min(0), reduction="none")
    mask = labels != -100
    return (nll * mask).sum(1) / mask.sum(1)


def test_each_step_trains_the_top_third_of_its_draw(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    seen = kept_batches(monkeypatch)
    assert run(tmp_path, tiny_model, "sft.learning_rate=0.0") == 0  # weights stay: scores are the first model's
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    # 48 rows, 5 with no assistant token left at max_length (TRL drops them): draws of 12, 12, 12, 7
    assert [len(drawn["input_ids"]) for drawn, _ in seen] == [12, 12, 12, 7]
    for drawn, kept in seen:
        scores = losses(model, drawn)
        top = torch.argsort(-scores, stable=True)[: len(scores) // 3].sort().values
        assert torch.equal(kept["input_ids"], drawn["input_ids"][top])
        assert torch.equal(kept["labels"], drawn["labels"][top])
    state = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "online/batch/drawn" in entry]
    assert state["global_step"] == 4 and [e["online/batch/drawn"] for e in logged] == [12.0, 12.0, 12.0, 7.0]
    assert [e["online/batch/kept"] for e in logged] == [4.0, 4.0, 4.0, 2.0]
    assert all(e["online/batch/kept_mean"] >= e["online/batch/cut"] for e in logged)


def test_rho_loss_inside_each_batch_subtracts_the_reference(tmp_path, tiny_model, monkeypatch):
    """`batch_reference`: the score is training loss minus the row's offline value; rows with a large reference are
    kept only when their loss is larger still."""
    monkeypatch.chdir(REPO)
    rows = [json.loads(line) for line in (REPO / "recipes/quickstart/data/alpaca_cleaned_400.jsonl").open()][:48]
    for i, row in enumerate(rows):
        row["reference_loss"] = [float(i % 5)]  # per-turn, like the `loss` scorer's column
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    seen = kept_batches(monkeypatch)
    assert run(tmp_path / "out", tiny_model, "sft.learning_rate=0.0", f"pool.0.path={tmp_path / 'pool.jsonl'}",
               "online={every: batch, batch_ratio: 3, batch_reference: 'sum(reference_loss)'}") == 0
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    assert seen and all("batch_reference" not in kept for _, kept in seen)  # never reaches the model
    for drawn, kept in seen:
        assert set(drawn["batch_reference"].tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
        scores = losses(model, drawn) - drawn["batch_reference"]
        top = torch.argsort(-scores, stable=True)[: len(scores) // 3].sort().values
        assert torch.equal(kept["input_ids"], drawn["input_ids"][top])


def test_ifd_per_batch_is_the_loss_over_the_answer_tokens_alone(tmp_path, tiny_model, monkeypatch):
    """`batch_score: ifd`: the kept rows are the top third by each row's loss over its loss tokens' loss read alone
    after BOS, computed here one row at a time, unpadded."""
    monkeypatch.chdir(REPO)
    seen = kept_batches(monkeypatch)
    assert run(tmp_path, tiny_model, "sft.learning_rate=0.0", "online={every: batch, batch_ratio: 3, batch_score: ifd}") == 0
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    bos = AutoTokenizer.from_pretrained(tiny_model).bos_token_id
    for drawn, kept in seen:
        direct = []
        for ids, labels in zip(drawn["input_ids"], drawn["labels"], strict=True):
            alone = torch.cat([ids.new_tensor([bos]), ids[labels != -100]])[None]
            with torch.no_grad():
                logits = model(input_ids=alone).logits[0, :-1]
            direct.append(F.cross_entropy(logits.float(), alone[0, 1:]).item())
        scores = losses(model, drawn) / torch.tensor(direct)
        top = torch.argsort(-scores, stable=True)[: len(scores) // 3].sort().values
        assert torch.equal(kept["input_ids"], drawn["input_ids"][top])


def test_gradient_accumulation_counts_kept_rows(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    counted = []
    original = BatchSelectingSFTTrainer.get_batch_samples

    def recording(self, epoch_iterator, num_batches, device):
        batches, items = original(self, epoch_iterator, num_batches, device)
        counted.append((int(items), sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)))
        return batches, items

    monkeypatch.setattr(BatchSelectingSFTTrainer, "get_batch_samples", recording)
    assert run(tmp_path, tiny_model, "sft.gradient_accumulation_steps=2") == 0
    assert counted and all(items == kept for items, kept in counted)  # the kept rows' loss tokens, not the drawn


def test_resume_from_a_checkpoint_continues_the_same_draws(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    checkpoints = ["sft.save_strategy=steps", "sft.save_steps=2"]
    assert run(tmp_path / "whole", tiny_model, *checkpoints) == 0
    resumed = f"sft.resume_from_checkpoint={tmp_path / 'whole' / 'sft' / 'checkpoint-2'}"
    assert run(tmp_path / "resumed", tiny_model, *checkpoints, resumed) == 0

    def steps(out):
        history = json.loads((out / "sft" / "trainer_state.json").read_text())["log_history"]
        return {e["step"]: (e["online/batch/cut"], e["online/batch/kept_mean"], e["loss"]) for e in history
                if "online/batch/drawn" in e}

    whole, after = steps(tmp_path / "whole"), steps(tmp_path / "resumed")
    # steps 1-2 come back with the checkpoint's state; 3-4 are trained again from it, on the same draws
    assert sorted(after) == [1, 2, 3, 4] and all(after[s] == pytest.approx(whole[s], rel=1e-6) for s in (3, 4))


@pytest.mark.parametrize(("online", "expected"), [
    ("{every: batch}", "online.batch_ratio: required with `every: batch`, at least 2"),
    ("{every: batch, batch_ratio: 1}", "online.batch_ratio: required with `every: batch`, at least 2, got 1"),
    ("{every: batch, batch_ratio: 2, select: {strategy: top_k, budget: 4}}", "online.select: per-batch selection"),
    ("{every: batch, batch_ratio: 2, scorer: {type: loss}}", "online.scorer: per-batch selection scores each row"),
    ("{every: epoch, batch_ratio: 2, select: {strategy: top_k, budget: 4}}", "online.batch_ratio: only read"),
    ("{every: epoch}", "online.select: required"),
    ("{every: epoch, batch_score: ifd, select: {strategy: top_k, budget: 4}}", "online.batch_score: only read"),
    ("{every: batch, batch_ratio: 2, batch_reference: 'refrence_loss'}", "online.batch_reference: 'refrence_loss': no column"),
    ("{every: epoch, batch_reference: x, select: {strategy: top_k, budget: 4}}", "online.batch_reference: only read"),
])
def test_batch_options_are_checked(online, expected, tiny_model, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["validate", RECIPE, f"model.name_or_path={tiny_model}", f"online={online}"]) == 2
    assert expected in capsys.readouterr().err


def test_take_keeps_per_row_tensors_and_lists():
    batch = {"input_ids": torch.arange(6).view(3, 2), "labels": torch.ones(3, 2), "scalar": torch.tensor(1.0),
             "names": ["a", "b", "c"]}
    kept = batch_selection.take(batch, torch.tensor([0, 2]))
    assert kept["input_ids"].tolist() == [[0, 1], [4, 5]] and kept["names"] == ["a", "c"] and kept["scalar"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "deepspeed_zero3"])
def test_two_processes_train_on_what_one_does(config, tmp_path, tiny_model, monkeypatch):
    """One ranking over the global draw: 2 CPU processes (2 rows each per step) keep the rows 1 process (4 per
    step) keeps from the same 12 drawn rows, so every step's score cut, kept mean score and loss agree."""
    import subprocess
    import sys

    import yaml

    monkeypatch.chdir(REPO)
    same = ["sft.max_length=256", "sft.num_train_epochs=2"]  # no row dropped: 48 rows, 4 draws of 12 per epoch
    assert run(tmp_path / "one", tiny_model, *same) == 0
    launch = yaml.safe_load((REPO / "accelerate_configs" / f"{config}.yaml").read_text())
    launch.update(num_processes=2, mixed_precision="no")
    (tmp_path / "launch.yaml").write_text(yaml.safe_dump(launch))
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "launch.yaml"),
         "-m", "deita_train", RECIPE, f"output_dir={tmp_path / 'two'}", f"model.name_or_path={tiny_model}", *BATCH,
         *same, "sft.per_device_train_batch_size=2"],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # the same rows, the same steps: equal up to float rounding (DDP's all-reduce adds the gradients in another order;
    # ZeRO-3 also swaps F.linear for its own matmul)
    tolerance = 1e-4 if config == "ddp" else 1e-3

    def logged(out):
        history = json.loads((out / "sft" / "trainer_state.json").read_text())["log_history"]
        return [(e["online/batch/drawn"], e["online/batch/kept"], e["online/batch/cut"], e["online/batch/kept_mean"],
                 e["loss"]) for e in history if "online/batch/drawn" in e]

    one, two = logged(tmp_path / "one"), logged(tmp_path / "two")
    assert len(one) == len(two) == 8 and all(row[:2] == (12.0, 4.0) for row in one + two)
    for a, b in zip(one, two, strict=True):
        assert b[2:] == pytest.approx(a[2:], rel=tolerance, abs=tolerance)
