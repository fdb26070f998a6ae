"""Reward and embedding scorers: the value one sample at a time, computed independently, and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from deita_train.data.chat_templates import VICUNA_SYSTEM

from .scoring_fixtures import assert_batched_equals_single, make_scorer, mixed_records, record


def test_reward_is_the_models_logit_on_its_chat_template(tiny_reward_model):
    scorer = make_scorer("reward", tiny_reward_model)
    rec = record(0, [("What is 2+2?", "4.")])
    (score,) = scorer.score_batch([rec])
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model, dtype=torch.float32)
    text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = float(model(input_ids=ids).logits[0, 0])
    assert isinstance(score.value, float) and score.value == pytest.approx(expected, abs=1e-5)


def test_reward_batched_equals_one_at_a_time(tiny_reward_model):
    assert_batched_equals_single(make_scorer("reward", tiny_reward_model, batch_tokens=200), mixed_records())


def test_reward_truncation_is_counted(tiny_reward_model):
    (score,) = make_scorer("reward", tiny_reward_model, max_length=16).score_batch([record(0, [("a " * 40, "b")])])
    assert score.truncated and score.value is not None


def test_last_token_embedding_is_final_hidden_state_of_vicuna_rendering(tiny_model):
    scorer = make_scorer("embedding", tiny_model)
    turns = [("Hi", "Hello!"), ("Bye", "Goodbye.")]
    (score,) = scorer.score_batch([record(0, turns)])
    text = f"<s>{VICUNA_SYSTEM} USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT: Goodbye.</s>"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, -1] == tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    assert score.value.dtype == np.float32 and score.value.shape == (64,)
    np.testing.assert_allclose(score.value, hidden[-1].numpy(), atol=1e-5)  # not normalized
    (mean,) = make_scorer("embedding", tiny_model, pooling="mean").score_batch([record(0, turns)])
    np.testing.assert_allclose(mean.value, hidden.mean(dim=0).numpy(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_embedding_batched_equals_one_at_a_time(tiny_model, pooling):
    assert_batched_equals_single(make_scorer("embedding", tiny_model, pooling=pooling, batch_tokens=300),
                                 mixed_records())


def test_embedding_float16_storage_and_truncation(tiny_model):
    scorer = make_scorer("embedding", tiny_model, storage_dtype="float16", max_length=20)
    (score,) = scorer.score_batch([record(0, [("long " * 50, "answer")])])
    assert score.value.dtype == np.float16 and score.truncated


def test_sentence_transformers_backend_normalized_and_batched(tiny_sentence_model):
    scorer = make_scorer("embedding", tiny_sentence_model, backend="sentence_transformers", max_batch_size=4)
    records = mixed_records()
    scores = scorer.score_batch(records)
    norms = np.linalg.norm(np.stack([s.value for s in scores]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert_batched_equals_single(scorer, records)


def test_scorer_models_load_whole_while_a_zero3_config_is_active(tiny_model):
    """Under ZeRO-3 transformers would build a model partitioned (`zero.Init`); scorers are full per-process replicas,
    and the run's DeepSpeed config is active again afterwards."""
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    from deita_train.scoring import lm
    from deita_train.scoring.base import ScoringContext

    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    assert is_deepspeed_zero3_enabled()
    model = lm.load_model(lm.ModelScorerConfig(type="ifd", model=str(tiny_model)), ScoringContext())
    assert not any(hasattr(p, "ds_id") for p in model.parameters())  # not DeepSpeed-partitioned
    assert model.model.embed_tokens.weight.shape == (model.config.vocab_size, model.config.hidden_size)
    assert is_deepspeed_zero3_enabled()
    del zero3
