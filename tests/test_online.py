"""Online selection: the sampler's contract, rounds that change the subset deterministically, a fixed step count,
kill/resume at the right round, the same selection on 2 processes, and strict `online:` parsing."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import yaml
from datasets import load_from_disk

from deita_train.cli.main import main
from deita_train.online.sampler import OnlineSampler, Round
from deita_train.recipe.errors import RecipeError
from deita_train.sections import load_recipe

from .conftest import REPO

RECIPE = "recipes/quickstart/online-cpu.yaml"
# 48 pool rows are the candidates (no offline score/select); short rows keep CPU steps fast.
FAST = ["~dpo", "~score", "~select", "callbacks=[]", "pool.0.limit=48", "sft.max_length=128",
        "online.scorer.max_length=128", "sft.per_device_train_batch_size=4", "sft.logging_steps=1"]


def run(out, tiny_model, *overrides) -> None:
    assert main(["run", RECIPE, f"output_dir={out}", f"model.name_or_path={tiny_model}", *FAST, *overrides]) == 0


def rounds(out) -> list[dict]:
    found = sorted((out / "online").glob("round_*/round.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    return [json.loads(p.read_text()) | {"ids": json.loads((p.parent / "selected.json").read_text())} for p in found]


def trainer_state(out) -> dict:
    return json.loads((out / "sft" / "trainer_state.json").read_text())


# -- the sampler alone ---------------------------------------------------------------------------------------------

def test_sampler_switches_mid_epoch_and_keeps_its_length():
    sampler = OnlineSampler(budget=6, seed=0)
    sampler.add(Round(0, epoch=0, offset=0, positions=[0, 1, 2, 3, 4, 5, 6, 7]))
    sampler.set_epoch(0)
    drawn = iter(sampler)
    first = [next(drawn) for _ in range(4)]
    assert set(first) <= set(range(8)) and len(set(first)) == 4
    with pytest.raises(RuntimeError, match="has drawn 4"):
        sampler.add(Round(1, epoch=0, offset=3, positions=[10, 11]))  # would rewrite samples already drawn
    sampler.add(Round(1, epoch=0, offset=4, positions=[10, 11]))
    assert list(drawn) in ([10, 11], [11, 10])  # the rest of the epoch comes from round 1
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert len(epoch1) == len(sampler) == 6 and sorted(epoch1) == [10, 10, 10, 11, 11, 11]  # cycled to the budget
    same = OnlineSampler(budget=6, seed=0)
    for done in sampler.rounds:
        same.add(done)
    assert [same.position(0, i) for i in range(6)] == first + [same.position(0, 4), same.position(0, 5)]
    assert same.digest(1) == sampler.digest(1)  # a pure function of (rounds, epoch, seed): what resume relies on


# -- training runs ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def twice(tmp_path_factory, tiny_model):
    """Two runs of 3 epochs with the same seed: 12 candidates re-scored per round (pool_fraction 0.25), 8 kept."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp(f"online-{name}")
        run(out, tiny_model, "online.pool_fraction=0.25", "online.select.budget=8", "sft.num_train_epochs=3")
        outs.append(out)
    return outs


def test_rounds_change_the_selection_deterministically(twice):
    first, second = rounds(twice[0]), rounds(twice[1])
    assert [r["round"] for r in first] == [0, 1, 2]
    assert [r["global_step"] for r in first] == [0, 2, 4] and all(r["offset"] == 0 for r in first)
    assert [r["ids"] for r in first] == [r["ids"] for r in second]  # same seed, same rounds
    assert [r["scores"] for r in first] == [r["scores"] for r in second]
    assert len({tuple(sorted(r["ids"])) for r in first}) > 1  # the subset changes across rounds
    assert first[0]["counts"]["changed"] is None
    assert [r["counts"]["changed"] for r in first[1:]] == [len(set(b["ids"]) - set(a["ids"]))
                                                          for a, b in zip(first[:-1], first[1:], strict=True)]
    for r in first:
        assert r["counts"]["rescored"] == 12 and len(r["ids"]) == r["counts"]["selected"] == 8
        assert r["scores"]["scored"]["count"] == r["counts"]["scored"] >= 12  # earlier rounds' scores carried
        scores = load_from_disk(str(twice[0] / "online" / f"round_{r['round']}" / "scores"))
        ranked = sorted((-sum(v), i) for i, v in zip(scores["id"], scores["score"], strict=True) if v is not None)
        assert r["ids"] == [i for _, i in ranked[:8]]  # top_k by the online IFD, highest first
        assert scores["scored_round"].count(r["round"]) == 12  # this round's slice; the other rows carried


def test_the_report_shows_the_rounds(twice):
    page = (twice[0] / "report" / "index.html").read_text()
    online = page[page.index('<section id="online">'):].split("</section>")[0]
    assert online.count("data:image/png") == 2  # rows changed per round, score drift
    assert [int(n) for n in re.findall(r"<tr><td>(\d+)</td><td>\d+</td><td>epoch", online)] == [0, 1, 2]


def test_steps_per_epoch_stay_fixed_by_the_budget(twice):
    state = trainer_state(twice[0])
    assert state["global_step"] == 3 * math.ceil(8 / 4)  # 48 candidates, 8 per epoch, batches of 4
    logged = [e for e in state["log_history"] if "online/round" in e]
    assert [e["online/round"] for e in logged] == [0, 1, 2] and all(e["online/selected"] == 8 for e in logged)
    assert [e["step"] for e in logged] == [0, 2, 4]


def test_resume_continues_at_the_right_round(tmp_path, tiny_model):
    """Rounds every 2 steps, 4 steps per epoch: round 1 switches mid-epoch; the run is stopped after step 3."""
    steps = ["online.every=steps", "online.every_steps=2", "online.select.budget=16", "online.pool_fraction=0.5",
             "sft.num_train_epochs=2", "sft.save_strategy=steps", "sft.save_steps=3"]
    run(tmp_path / "whole", tiny_model, *steps)
    run(tmp_path / "resumed", tiny_model, *steps, "sft.max_steps=3")  # killed after the checkpoint at step 3
    assert [r["round"] for r in rounds(tmp_path / "resumed")] == [0, 1]
    run(tmp_path / "resumed", tiny_model, *steps, "sft.resume_from_checkpoint=true")

    whole, resumed = rounds(tmp_path / "whole"), rounds(tmp_path / "resumed")
    where = [(r["round"], r["global_step"], r["epoch"], r["offset"]) for r in whole]
    # round 1 fires after step 2 while batch 3 is already drawn (one-batch prefetch): it starts at sample 12 of 16
    assert where == [(0, 0, 0, 0), (1, 2, 0, 12), (2, 4, 1, 0), (3, 6, 1, 12)]
    assert [(r["round"], r["global_step"], r["epoch"], r["offset"]) for r in resumed] == where
    assert [r["ids"] for r in resumed] == [r["ids"] for r in whole]
    state, reference = trainer_state(tmp_path / "resumed"), trainer_state(tmp_path / "whole")
    assert state["global_step"] == reference["global_step"] == 8
    assert [e["online/round"] for e in state["log_history"] if "online/round" in e] == [0, 1, 2, 3]  # none redone
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses == pytest.approx([e["loss"] for e in reference["log_history"] if "loss" in e], rel=1e-5)


# -- the recipe ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("online.evry=steps", "online.evry: unknown key; did you mean 'every'?"),
        ("online.every=step", "online.every: expected one of 'epoch', 'steps'"),
        ("online.every=steps", "online.every_steps: required with `every: steps`"),
        ("online.every_steps=3", "online.every_steps: only read with `every: steps`"),
        ("online.pool_fraction=1.5", "online.pool_fraction: must be in (0, 1]"),
        ("online.scorer.type=ifdd", "online.scorer.type: unknown scorer 'ifdd'; did you mean 'ifd'?"),
        ("online.scorer={type: length}", "online.scorer.type: 'length' cannot score with the model being trained"),
        ("online.scorer.model=gpt2", "online.scorer.model: the online scorer runs the model being trained"),
        ("online.select.budgett=4", "online.select.budgett: unknown key; did you mean 'budget'?"),
        ("online.select.strategy=topk", "online.select.strategy: unknown strategy 'topk'; did you mean 'top_k'?"),
        ("~online.select.budget", "online.select.budget: required"),
        ("online.select.budget=500", "online.select.budget: 500 is more than select.budget (128)"),
        ("~sft", "online: needs an sft stage"),
        ("sft.packing=true", "sft.packing: online selection samples whole rows"),
    ],
)
def test_online_recipe_errors_name_the_key(override, expected, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(RecipeError) as caught:
        load_recipe(RECIPE, [f"model.name_or_path={tiny_model}", "~dpo", override])
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_online_recipe_parses_typed(tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(RECIPE, [f"model.name_or_path={tiny_model}", "online.scorer={type: loss}"])
    assert recipe.online.scorer.type == "loss" and recipe.online.select.options.budget == 48
    assert recipe.online.every == "epoch" and recipe.online.pool_fraction == 0.5
    default = load_recipe(RECIPE, [f"model.name_or_path={tiny_model}", "~online.scorer"])
    assert default.online.scorer.type == "ifd"


# -- 2 processes -----------------------------------------------------------------------------------------------------

# 25 rows re-scored per round, one per forward pass: the shares (13 and 12) need different numbers of passes,
# which ZeRO-3 survives only with the dummy passes that keep the processes in step.
TWO_PROCESS = ["online.select.budget=16", "online.pool_fraction=0.52", "online.scorer.max_batch_size=1",
               "sft.num_train_epochs=2"]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("online-single")
    run(out, tiny_model, *TWO_PROCESS)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "deepspeed_zero3"])
def test_two_processes_select_the_same_rows(config, tmp_path, tiny_model, single_process, monkeypatch):
    """2 CPU processes (gloo) under DDP and ZeRO-3 (weights partitioned, re-scoring passes kept in step): one
    selection for both (their planned sample orders hash the same, checked in every round), round 0 as a single
    process chooses it (same weights, same slice), and half the steps."""
    monkeypatch.chdir(REPO)
    launch = yaml.safe_load((REPO / "accelerate_configs" / f"{config}.yaml").read_text())
    launch.update(num_processes=2, mixed_precision="no")
    (tmp_path / "launch.yaml").write_text(yaml.safe_dump(launch))
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "launch.yaml"),
         "-m", "deita_train", RECIPE, f"output_dir={tmp_path / 'launched'}", f"model.name_or_path={tiny_model}",
         *FAST, *TWO_PROCESS],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    two, one = rounds(tmp_path / "launched"), rounds(single_process)
    assert [r["round"] for r in two] == [0, 1] and all(r["processes"] == 2 for r in two)
    assert two[0]["ids"] == one[0]["ids"]
    # ZeRO-3 swaps F.linear for its own matmul (deepspeed zero3_linear_wrap): the same scores up to float rounding
    tolerance = 1e-6 if config == "ddp" else 1e-3
    assert two[0]["scores"]["scored"]["mean"] == pytest.approx(one[0]["scores"]["scored"]["mean"], rel=tolerance)
    assert trainer_state(tmp_path / "launched")["global_step"] == 2 * math.ceil(16 / (4 * 2))
    assert trainer_state(single_process)["global_step"] == 2 * math.ceil(16 / 4)


def test_online_selection_with_lora_scores_with_the_adapters_in_place(tmp_path, tiny_model, monkeypatch):
    """With `peft:` the trainer's model is a PeftModel; rounds score with the LoRA-adapted model and training goes on."""
    monkeypatch.chdir(REPO)
    run(tmp_path, tiny_model, "peft={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}", "sft.num_train_epochs=2",
        "online.select.budget=8", "online.pool_fraction=1.0")
    done = rounds(tmp_path)
    before, after = (load_from_disk(str(tmp_path / "online" / f"round_{k}" / "scores"))["score"] for k in (0, 1))
    assert before != after  # only the adapters train (the base is frozen): round 1 saw the trained adapters
    assert [r["round"] for r in done] == [0, 1]
    assert all(r["counts"]["rescored"] > 0 and r["counts"]["selected"] == done[0]["counts"]["selected"] for r in done)
    assert (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert trainer_state(tmp_path)["global_step"] == 2 * math.ceil(done[0]["counts"]["selected"] / 4)


def test_rho_loss_ranks_by_training_loss_minus_reference_loss(tmp_path, tiny_model, monkeypatch):
    """RHO-LOSS from parts that exist: an offline `loss` column from the reference model, online `loss` with the
    training model, `top_k` over their difference; round 0 (the initial weights) is checked against both scorers
    run offline."""
    import numpy as np

    from deita_train.training.tiny_model import TinyModelConfig, build_tiny_model

    from .scoring_fixtures import make_scorer

    monkeypatch.chdir(REPO)
    reference = build_tiny_model(tmp_path / "reference", TinyModelConfig(seed=1))  # same tokenizer, other weights
    out = tmp_path / "run"
    run(out, tiny_model, "score.reference_loss.type=loss", f"score.reference_loss.model={reference}",
        "score.reference_loss.max_length=128", "online.scorer.type=loss", "online.scorer.max_length=128", "online.select.score=score - reference_loss",
        "online.select.budget=8", "online.pool_fraction=1.0", "sft.num_train_epochs=1")
    candidates = load_from_disk(str(out / "scored"))
    online = load_from_disk(str(out / "online" / "round_0" / "scores"))
    trainable = set(online["id"])  # rows with an assistant token left after sft.max_length
    assert len(trainable) >= len(candidates) - 1
    candidates = candidates.filter(lambda row: row["id"] in trainable)
    records = candidates.to_list()
    training_loss = [s.value for s in make_scorer("loss", tiny_model, max_length=128).score_batch(records)]
    reference_loss = [s.value for s in make_scorer("loss", reference, max_length=128).score_batch(records)]
    assert_turns_close(candidates["reference_loss"], reference_loss, 1e-5)  # SFT's candidates carry the column
    assert online["id"] == candidates["id"]
    assert_turns_close(online["score"], training_loss, 1e-4)  # scored with the training model before any step
    scorable = [i for i in range(len(records)) if training_loss[i] is not None and reference_loss[i] is not None]
    difference = {i: sum(np.subtract(training_loss[i], reference_loss[i])) for i in scorable}
    ranked = sorted(scorable, key=lambda i: (-difference[i], i))
    assert rounds(out)[0]["ids"] == [records[i]["id"] for i in ranked[:8]]
    by_loss = sorted(scorable, key=lambda i: (-sum(training_loss[i]), i))
    assert set(ranked[:8]) != set(by_loss[:8])  # the reference changes the choice: not plain top-loss


def assert_turns_close(got: list, expected: list, atol: float) -> None:
    """Per-turn score lists equal within `atol`, nulls in the same rows."""
    assert len(got) == len(expected)
    for row, (value, want) in enumerate(zip(got, expected, strict=True)):
        assert (value is None) == (want is None), row
        if value is not None:
            assert value == pytest.approx(want, abs=atol), row
