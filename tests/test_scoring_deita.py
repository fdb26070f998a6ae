"""Deita complexity and quality scorers against docs/methods.md, Deita scorers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deita_train.scoring.deita import COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE, digit_ids, expected_digit

from .scoring_fixtures import (
    assert_batched_equals_single,
    gpt2_model,  # noqa: F401  (fixture)
    make_scorer,
    mixed_records,
    record,
    reference_next_logits,
)

# Typed out from docs/methods.md, not imported: the templates must stay character-exact.
COMPLEXITY = ("You are a helpful assistant. Please identify the complexity score of the following user query. \n"
              "##Query: {instruction}  \n##Complexity: ")
QUALITY = ("You are a helpful assistant. Please identify the quality score of the Response corresponding to the "
           "Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: ")


@pytest.mark.parametrize(("logits", "expected"), [
    ([0.0] * 6, 3.5),
    ([0, 0, 2, 0, 0, 0], 3.2421491981),
    ([-1, 0, 1, 2, 1, 0], 3.9273611491),
])
def test_expected_digit_toy_checks(logits, expected):
    assert float(expected_digit(torch.tensor(logits, dtype=torch.float32))) == pytest.approx(expected, abs=1e-9)


def test_templates_are_character_exact():
    assert COMPLEXITY_TEMPLATE == COMPLEXITY
    assert QUALITY_TEMPLATE == QUALITY


def test_digit_ids_come_from_the_tokenizer(tiny_model, shared_data):
    from transformers import GPT2TokenizerFast

    gpt2 = GPT2TokenizerFast(tokenizer_file=str(shared_data / "tokenizers" / "gpt2" / "tokenizer.json"))
    assert digit_ids(gpt2) == [16, 17, 18, 19, 20, 21]
    tiny = AutoTokenizer.from_pretrained(tiny_model)
    assert [tiny.decode([i]) for i in digit_ids(tiny)] == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.parametrize("kind", ["deita_complexity", "deita_quality"])
def test_score_is_expected_digit_of_one_forward_pass(tiny_model, kind):
    scorer = make_scorer(kind, tiny_model)
    rec = record(0, [("Explain gravity.", "Things fall down."), ("And light?", "It travels fast.")])
    (score,) = scorer.score_batch([rec])
    assert len(score.value) == 2 and not score.truncated
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # adds BOS itself
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    digits = [tokenizer.convert_tokens_to_ids(d) for d in "123456"]
    for (user, answer), value in zip([("Explain gravity.", "Things fall down."), ("And light?", "It travels fast.")],
                                     score.value, strict=True):
        prompt = COMPLEXITY.format(instruction=user) if kind == "deita_complexity" else QUALITY.format(
            instruction=user, output=answer)
        ids = tokenizer(prompt)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        probs = torch.softmax(reference_next_logits(model, ids)[digits].double(), dim=0)
        assert value == pytest.approx(float((probs * torch.arange(1, 7)).sum()), abs=1e-5)


@pytest.mark.parametrize("kind", ["deita_complexity", "deita_quality"])
def test_batched_equals_one_at_a_time(tiny_model, kind):
    scorer = make_scorer(kind, tiny_model, batch_tokens=400)  # several batches of mixed lengths
    records = mixed_records()
    assert_batched_equals_single(scorer, records)
    assert [len(s.value) for s in scorer.score_batch(records)] == [len(r["messages"]) // 2 for r in records]


def test_long_text_is_truncated_not_the_template(tiny_model):
    scorer = make_scorer("deita_quality", tiny_model, max_length=120)
    rec = record(0, [("Why is the sky blue? " * 30, "Because of Rayleigh scattering. " * 40)])
    ids, truncated = scorer.prompt_ids(scorer.fields(scorer_turn(rec)))
    assert truncated and len(ids) <= 120
    text = scorer.tokenizer.decode(ids[1:])
    assert text.startswith(QUALITY.split("{instruction}")[0]) and text.endswith(" \n##Quality: ")
    assert "\n#Response#:\nBecause of Rayleigh" in text
    (score,) = scorer.score_batch([rec])
    assert score.truncated and 1 <= score.value[0] <= 6


def test_short_text_is_not_truncated(tiny_model):
    scorer = make_scorer("deita_complexity", tiny_model)
    (score,) = scorer.score_batch([record(0, [("Hi", "Hello")])])
    assert not score.truncated


def scorer_turn(rec):
    from deita_train.data.conversation import turns

    return turns(rec["messages"])[0]


def test_gpt2_tokenizer_scores_without_bos(gpt2_model):  # noqa: F811
    scorer = make_scorer("deita_complexity", gpt2_model)
    assert scorer.bos == []
    assert_batched_equals_single(scorer, mixed_records())
