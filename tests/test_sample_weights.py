"""Per-sample loss weights (`sft.sample_weight`, `dpo.sample_weight`; training/weights.py): uniform weights give
TRL's losses, a zero weight no gradient, weights scale as documented, normalization to mean 1, and the errors."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from deita_train.data.config import SourceConfig
from deita_train.data.sources import load_sources
from deita_train.recipe.errors import RecipeError
from deita_train.sections import load_recipe
from deita_train.training.config import ModelConfig, SFTStage
from deita_train.training.models import load_causal_lm, load_tokenizer
from deita_train.training.section import PREFERENCE_COLUMNS
from deita_train.training.sft import train_sft
from deita_train.training.weights import (
    WEIGHT,
    DPOWeights,
    SFTWeights,
    sample_weights,
    token_weights,
    with_weights,
)

from .conftest import QUICKSTART_DATA, REPO
from .test_online import run as run_online

QUICKSTART = REPO / "recipes" / "quickstart" / "tiny-cpu.yaml"


def trainer(kind: str, tiny_model, tmp_path, rows: Dataset):
    """A weighted SFT or DPO trainer on `rows` (weights all 1), with the tiny float32 model in train mode."""
    model = load_causal_lm(ModelConfig(str(tiny_model), dtype="float32"))
    common = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none", "max_length": 256}
    config, base, mixin = ((SFTConfig(**common), SFTTrainer, SFTWeights) if kind == "sft"
                           else (DPOConfig(**common, beta=0.5), DPOTrainer, DPOWeights))
    built = with_weights(base, mixin)(model=model, args=config, processing_class=load_tokenizer(str(tiny_model)),
                                      train_dataset=rows.add_column(WEIGHT, [1.0] * len(rows)))
    built.model.train()
    return built


@pytest.fixture(scope="module")
def sft(tiny_model, tmp_path_factory):
    rows, _ = load_sources([SourceConfig(str(QUICKSTART_DATA / "alpaca_cleaned_400.jsonl"), "alpaca", limit=6)], 0)
    return trainer("sft", tiny_model, tmp_path_factory.mktemp("sft"), rows.select_columns(["messages", "id"]))


@pytest.fixture(scope="module")
def dpo(tiny_model, tmp_path_factory):
    rows, _ = load_sources([SourceConfig(str(QUICKSTART_DATA / "preference_300.jsonl"), "preference", limit=8)], 0,
                           preference=True)
    assert set(rows.column_names) == PREFERENCE_COLUMNS  # what `deita-train validate` resolves dpo columns against
    built = trainer("dpo", tiny_model, tmp_path_factory.mktemp("dpo"), rows.select_columns(["prompt", "chosen",
                                                                                          "rejected"]))
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy off the reference so that the pair losses differ
        for parameter in built.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return built


def batch(trainer, weights: dict[int, float] | list[int]) -> dict:
    """The collated rows at these positions of the trainer's dataset: `{position: weight}`, or positions unweighted."""
    rows = [trainer.train_dataset[i] | {WEIGHT: weights[i]} if isinstance(weights, dict)
            else {k: v for k, v in trainer.train_dataset[i].items() if k != WEIGHT} for i in weights]
    return trainer._prepare_inputs(trainer.data_collator(rows))


def loss_and_grads(trainer, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs, num_items_in_batch=num_items_in_batch)
    loss.backward()
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]
    return loss.detach(), grads


def assert_grads(got: list[torch.Tensor], expected: list[torch.Tensor], scale: float = 1.0) -> None:
    """Equal up to float32 rounding (padding to another batch shape changes the kernels' summation order)."""
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, scale * b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def loss_tokens(inputs: dict) -> int:
    return int((inputs["labels"][:, 1:] != -100).sum())


@pytest.mark.parametrize("num_items_in_batch", [None, 500])
def test_uniform_weights_give_trls_sft_loss(sft, num_items_in_batch):
    """A batch without `sample_weight` goes to SFTTrainer.compute_loss untouched: that is TRL's loss."""
    weighted = sft.compute_loss(sft.model, batch(sft, dict.fromkeys(range(4), 1.0)), num_items_in_batch=num_items_in_batch)
    plain = sft.compute_loss(sft.model, batch(sft, [0, 1, 2, 3]), num_items_in_batch=num_items_in_batch)
    torch.testing.assert_close(weighted, plain, rtol=0, atol=1e-6)


def test_sft_weights_scale_each_rows_token_losses(sft):
    """`sum_t w_row(t) nll_t / N`: rows weighted (2, 0) are row 0 alone weighted 2 under the same normalizer N; with
    TRL's own N (the batch's loss tokens) row 1's tokens still count. A zero-weight row alone gives zero gradients."""
    both, alone = batch(sft, {0: 2.0, 1: 0.0}), batch(sft, {0: 1.0})
    tokens = loss_tokens(both)
    loss, grads = loss_and_grads(sft, both, tokens)
    loss_alone, grads_alone = loss_and_grads(sft, alone, tokens)
    torch.testing.assert_close(loss, 2 * loss_alone)
    assert_grads(grads, grads_alone, 2.0)
    torch.testing.assert_close(sft.compute_loss(sft.model, both), 2 * loss_alone)  # N = the batch's loss tokens
    torch.testing.assert_close(sft.compute_loss(sft.model, alone), loss_alone * tokens / loss_tokens(alone))
    loss, grads = loss_and_grads(sft, batch(sft, {1: 0.0}))
    assert loss == 0 and all(not g.any() for g in grads)


def test_sft_batches_carry_the_weight_through_trls_column_removal(sft):
    assert sft.args.remove_unused_columns  # TRL's default: only signature columns reach the collator
    first = next(iter(sft.get_train_dataloader()))
    assert first[WEIGHT].tolist() == [1.0] * len(first["input_ids"])


def test_padding_free_batches_weigh_each_sample_by_its_own_weight():
    """Padding-free (FlashAttention only, so not trained here): one row of samples end to end, then padding."""
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, pad_to_multiple_of=8)
    inputs = collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    assert token_weights(torch.tensor([2.0, 5.0]), inputs).tolist() == [[2.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0, 5.0]]


def test_uniform_weights_give_trls_dpo_loss(dpo):
    weighted = dpo.compute_loss(dpo.model, batch(dpo, dict.fromkeys(range(4), 1.0)))
    plain = dpo.compute_loss(dpo.model, batch(dpo, [0, 1, 2, 3]))
    assert abs(plain.item() - math.log(2)) > 1e-3  # the policy is not the reference (where every pair gives log 2)
    torch.testing.assert_close(weighted, plain, rtol=0, atol=1e-6)


def test_dpo_weights_scale_each_pairs_gradient(dpo):
    """The gradient of `(1/B) sum_b w_b loss_b`: pairs weighted (2, 0) are pair 0 alone; the logged loss stays TRL's
    unweighted mean. A zero-weight pair alone gives zero gradients."""
    loss, grads = loss_and_grads(dpo, batch(dpo, {0: 2.0, 1: 0.0}))
    _, grads_alone = loss_and_grads(dpo, batch(dpo, {0: 1.0}))
    assert_grads(grads, grads_alone)
    torch.testing.assert_close(loss, dpo.compute_loss(dpo.model, batch(dpo, [0, 1])))
    _, grads = loss_and_grads(dpo, batch(dpo, {1: 0.0}))
    assert all(not g.any() for g in grads)


def test_weights_are_normalized_to_mean_one():
    rows = Dataset.from_dict({"id": [5, 6, 7, 8], "q": [1, 2, 3, 6], "turns": [[0.5, 0.5], [2], [1, 2], [6]]})
    assert sample_weights(rows, "q", "sft.sample_weight") == pytest.approx([1 / 3, 2 / 3, 1, 2])
    assert sample_weights(rows, "turns", "sft.sample_weight") == pytest.approx([1 / 3, 2 / 3, 1, 2])  # turns summed


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0, None, -1.0], "sft.sample_weight: 'q' is null (a column it reads is null there) for the row with id 11 "
                        "(2 of 3 rows); a weight must be a finite number >= 0"),
    ([1.0, 2.0, -0.5], "sft.sample_weight: 'q' is -0.5 for the row with id 12 (1 of 3 rows)"),
    ([0.0, 0.0, 0.0], "sft.sample_weight: 'q' is 0 for every training row; at least one weight must be > 0"),
])
def test_bad_weights_name_the_row_id(values, expected):
    with pytest.raises(RecipeError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        sample_weights(Dataset.from_dict({"id": [10, 11, 12], "q": values}), "q", "sft.sample_weight")


def test_a_null_weight_stops_sft_before_the_model_loads(tmp_path):
    rows = Dataset.from_list([{"id": 3, "q": None, "messages": [{"role": "user", "content": "hi"},
                                                                {"role": "assistant", "content": "hello"}]}])
    stage = SFTStage(args={"use_cpu": True}, sample_weight="q * 2")
    with pytest.raises(RecipeError, match="'q \\* 2' is null .* for the row with id 3"):
        train_sft(rows, ModelConfig(str(tmp_path / "no-such-model")), stage, tmp_path, 42)


def problems_of(tiny_model, *overrides) -> list[str]:
    with pytest.raises(RecipeError) as error:
        load_recipe(QUICKSTART, [f"model.name_or_path={tiny_model}", *overrides])
    return error.value.problems


@pytest.mark.parametrize(("override", "expected"), [
    ("sft.sample_weight=lenght / 100", "sft.sample_weight: 'lenght / 100': no column 'lenght'; did you mean 'length'?"),
    ("dpo.sample_weight=source_rwo", "dpo.sample_weight: 'source_rwo': no column 'source_rwo'; did you mean 'source_row'?"),
    ("sft.sample_weight=length.__class__", "sft.sample_weight: 'length.__class__': "),
    ("dpo.loss_type=[sigmoid, aot]", "dpo.sample_weight: weights each pair's loss, but loss_type aot is no per-pair loss"),
    ("sft.loss_type=dft", "sft.sample_weight: weights TRL's nll loss, not loss_type dft; remove one"),
])
def test_validate_checks_the_weight_expression_and_what_it_cannot_weigh(tiny_model, monkeypatch, override, expected):
    monkeypatch.chdir(REPO)
    (problem,) = problems_of(tiny_model, "sft.sample_weight=length / 100", "dpo.sample_weight=source_row + 1", override)
    assert problem.startswith(expected)


def test_validate_accepts_weights_over_pool_and_score_columns(tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(QUICKSTART, [f"model.name_or_path={tiny_model}", "sft.sample_weight=length / 100 + "
                                      "(source_file == 'x')", "dpo.sample_weight=source_row + 1"])
    assert (recipe.sft.sample_weight, recipe.dpo.sample_weight) == ("length / 100 + (source_file == 'x')",
                                                                    "source_row + 1")
    assert "sample_weight" not in recipe.sft.args


def test_weights_compose_with_online_selection(tmp_path, tiny_model, monkeypatch):
    """The online trainer (a partial of OnlineSFTTrainer) gets the weighted loss; its batches carry the weights of
    `source_row` (the line number: 1..48) over the 48 candidates, normalized to mean 1: line / 24.5."""
    monkeypatch.chdir(REPO)
    seen = []
    weigh = SFTWeights.weigh
    monkeypatch.setattr(SFTWeights, "weigh", lambda self, log_probs, inputs, weights:
                        seen.extend(weights.tolist()) or weigh(self, log_probs, inputs, weights))
    run_online(tmp_path, tiny_model, "sft.sample_weight=source_row", "sft.num_train_epochs=1",
               "online.select.budget=8")
    assert len(seen) == 8
    assert all(abs(w * 24.5 - round(w * 24.5)) < 1e-4 and 1 <= round(w * 24.5) <= 48 for w in seen)
