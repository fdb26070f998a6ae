"""IFD (both conventions) and perplexity against docs/methods.md, IFD, computed independently per sample."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .scoring_fixtures import (
    alpaca,
    assert_batched_equals_single,
    gpt2_model,  # noqa: F401  (fixture)
    make_scorer,
    mixed_records,
    record,
    reference_mean_loss,
)

CHERRY_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                "### Input:\n{input}\n\n### Response:")


def load(path):
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_superfiltering_with_bos_tokenizer(tiny_model):
    tokenizer, model = load(tiny_model)  # the tiny tokenizer adds BOS on encode
    rec = alpaca(0, "Translate to French", "good morning", "Bonjour, comment allez-vous?")
    (score,) = make_scorer("ifd", tiny_model).score_batch([rec])
    prompt = "Translate to French\ngood morning\n"
    whole = tokenizer(prompt + rec["output"])["input_ids"]
    lc = reference_mean_loss(model, whole, len(tokenizer(prompt)["input_ids"]))
    direct = tokenizer(rec["output"])["input_ids"]
    assert direct[0] == tokenizer.bos_token_id
    ld = reference_mean_loss(model, direct, 1)  # BOS given: every answer token scored
    assert score.extras["loss_cond"][0] == pytest.approx(lc, abs=1e-5)
    assert score.extras["loss_direct"][0] == pytest.approx(ld, abs=1e-5)
    assert score.value[0] == pytest.approx(math.exp(lc) / math.exp(ld), rel=1e-5)


def test_cherry_with_bos_tokenizer_uses_alpaca_input_template(tiny_model):
    tokenizer, model = load(tiny_model)
    rec = alpaca(0, "Translate to French", "good morning", "Bonjour, comment allez-vous?")
    (score,) = make_scorer("ifd", tiny_model, convention="cherry").score_batch([rec])
    prompt = CHERRY_INPUT.format(instruction="Translate to French", input="good morning")
    lc = reference_mean_loss(model, tokenizer(prompt + rec["output"])["input_ids"], len(tokenizer(prompt)["input_ids"]))
    direct = "### Response:" + rec["output"]
    ld = reference_mean_loss(model, tokenizer(direct)["input_ids"], len(tokenizer("### Response:")["input_ids"]))
    assert score.value[0] == pytest.approx(lc / ld, rel=1e-5)


def test_gpt2_no_bos_first_answer_token_unscored_and_merged_boundary(gpt2_model):  # noqa: F811
    tokenizer, model = load(gpt2_model)
    answer = "\n\nThe answer is forty two, as everyone knows."
    rec = alpaca(0, "What is the answer?", "", answer)
    (score,) = make_scorer("ifd", gpt2_model).score_batch([rec])
    prompt = "What is the answer?\n"
    whole = tokenizer(prompt + answer)["input_ids"]
    boundary = len(tokenizer(prompt)["input_ids"])
    assert whole[boundary - 1] == tokenizer.convert_tokens_to_ids("ĊĊ")  # "\n\n" merged across the boundary
    lc = reference_mean_loss(model, whole, boundary)  # the merged token is the prompt's, not scored
    direct = tokenizer(answer)["input_ids"]
    assert direct[0] != tokenizer.bos_token_id
    ld = reference_mean_loss(model, direct, 1)  # no BOS: a_1 cannot be predicted, left out
    assert score.extras["loss_cond"][0] == pytest.approx(lc, abs=1e-5)
    assert score.extras["loss_direct"][0] == pytest.approx(ld, abs=1e-5)
    assert score.value[0] == pytest.approx(math.exp(lc) / math.exp(ld), rel=1e-5)
    assert not score.truncated


def test_gpt2_truncation_cuts_the_answer_and_matches_direct_length(gpt2_model):  # noqa: F811
    tokenizer, model = load(gpt2_model)
    answer = "Cats sleep a lot during the day and hunt at night. " * 10
    rec = alpaca(0, "Describe cats", "", answer)
    (score,) = make_scorer("ifd", gpt2_model, max_length=40).score_batch([rec])
    prompt = "Describe cats\n"
    boundary = len(tokenizer(prompt)["input_ids"])
    whole = tokenizer(prompt + answer)["input_ids"][:40]
    kept = 40 - boundary
    lc = reference_mean_loss(model, whole, boundary)
    ld = reference_mean_loss(model, tokenizer(answer)["input_ids"][: kept + 1], 1)  # same number of scored tokens
    assert score.truncated
    assert score.value[0] == pytest.approx(math.exp(lc) / math.exp(ld), rel=1e-5)


def test_unscorable_records_get_a_reason_not_a_value(gpt2_model):  # noqa: F811
    scorer = make_scorer("ifd", gpt2_model, max_length=8)
    long_prompt = record(0, [("word " * 20, "an answer")])
    one_token = record(1, [("Say hi", "hi")])
    scores = scorer.score_batch([long_prompt, one_token])
    assert (scores[0].value, scores[0].reason) == (None, "prompt fills max_length")
    assert scores[1].value is None and "one token" in scores[1].reason


def test_multi_turn_one_value_per_turn_with_history_in_prompt(tiny_model):
    tokenizer, model = load(tiny_model)
    turns = [("Hi there", "Hello! How can I help?"), ("Count to three", "1, 2, 3."), ("Thanks", "Welcome.")]
    (score,) = make_scorer("ifd", tiny_model).score_batch([record(0, turns)])
    assert len(score.value) == 3
    prompt = "Hi there\nHello! How can I help?\nCount to three\n"
    lc = reference_mean_loss(model, tokenizer(prompt + "1, 2, 3.")["input_ids"], len(tokenizer(prompt)["input_ids"]))
    ld = reference_mean_loss(model, tokenizer("1, 2, 3.")["input_ids"], 1)
    assert score.value[1] == pytest.approx(math.exp(lc) / math.exp(ld), rel=1e-5)


@pytest.mark.parametrize("convention", ["superfiltering", "cherry"])
def test_batched_equals_one_at_a_time_bos(tiny_model, convention):
    assert_batched_equals_single(make_scorer("ifd", tiny_model, convention=convention, batch_tokens=300),
                                 mixed_records())


def test_batched_equals_one_at_a_time_gpt2(gpt2_model):  # noqa: F811
    assert_batched_equals_single(make_scorer("ifd", gpt2_model, batch_tokens=300), mixed_records())


def test_ppl_is_exp_of_conditioned_loss(tiny_model):
    tokenizer, model = load(tiny_model)
    scorer = make_scorer("ppl", tiny_model, batch_tokens=300)
    rec = alpaca(0, "Name a color", "", "Blue.")
    (score,) = scorer.score_batch([rec])
    prompt = "Name a color\n"
    lc = reference_mean_loss(model, tokenizer(prompt + "Blue.")["input_ids"], len(tokenizer(prompt)["input_ids"]))
    assert score.value[0] == pytest.approx(math.exp(lc), rel=1e-5)
    assert_batched_equals_single(scorer, mixed_records(), atol=1e-3)  # perplexities are O(1e3) on a random model


def test_loss_scorer_is_ifds_conditioned_loss_and_use_scores_an_in_memory_model(tiny_model):
    records = mixed_records()
    loss = make_scorer("loss", tiny_model, batch_tokens=300).score_batch(records)
    ifd = make_scorer("ifd", tiny_model, batch_tokens=300)
    expected = ifd.score_batch(records)
    for got, want in zip(loss, expected, strict=True):
        assert got.reason == want.reason and got.extras == {}
        if want.value is not None:
            assert got.value == pytest.approx(want.extras["loss_cond"], abs=1e-6)
    # online selection: the same scorer on a model already in memory, padded with dummy passes (ZeRO-3 lockstep)
    tokenizer, model = load(tiny_model)
    counts = []
    online = make_scorer("ifd", tiny_model, batch_tokens=300)
    online.use(model, tokenizer, sync_batches=lambda n: counts.append(n) or n + 2)
    for got, want in zip(online.score_batch(records), expected, strict=True):
        assert got.reason == want.reason
        if want.value is not None:
            assert got.value == pytest.approx(want.value, abs=1e-6)
    # per pass (conditioned, direct): the decoder passes, then the head calls of each one: 2 dummies with no rows
    assert counts[0] > 0 and counts.count(0) == 2 * 2


@pytest.mark.parametrize("convention", ["superfiltering", "cherry"])
@pytest.mark.parametrize("direct", [True, False])
def test_batch_tokenized_passes_equal_one_text_at_a_time(gpt2_model, convention, direct):  # noqa: F811
    """`prepare` tokenizes a whole batch in one call; the passes equal encoding each text on its own."""
    from functools import partial

    from deita_train.scoring import lm
    from deita_train.scoring.ifd import record_passes

    scorer = make_scorer("ifd", gpt2_model, convention=convention, max_length=48)
    records = mixed_records() + [record(90, [("word " * 60, "an answer")]), record(91, [("Say hi", "hi")])]
    one_at_a_time = [record_passes(partial(lm.encode, scorer.tokenizer), scorer.bos, r, convention, 48, direct)
                     for r in records]
    assert scorer.prepare(records, direct) == one_at_a_time
    assert any(isinstance(p, str) for p in one_at_a_time) and any(not isinstance(p, str) for p in one_at_a_time)
