"""Fixtures for the scoring tests: tiny models built locally, records, and independent reference computations.

The reference functions here are written the way the authors' code works (one sample, full forward
pass with `labels`, full logits), independently of `deita_train.scoring.lm`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2TokenizerFast


def record(i: int, messages: list[tuple[str, str]], **fields) -> dict:
    """A canonical pool row with the given (user, assistant) turns."""
    body = [m for user, answer in messages for m in ({"role": "user", "content": user},
                                                     {"role": "assistant", "content": answer})]
    return {"id": i, "messages": body, "source": "test", "instruction": None, "input": None, "output": None} | fields


def alpaca(i: int, instruction: str, input_text: str, output: str) -> dict:
    """A pool row from an Alpaca record, with its original fields kept (as data/sources.py does)."""
    user = f"{instruction}\n\n{input_text}" if input_text else instruction
    return record(i, [(user, output)], instruction=instruction, input=input_text, output=output)


def mixed_records() -> list[dict]:
    """Mixed lengths, one multi-turn record, one Alpaca record with input."""
    rows = [record(i, [(f"Tell me about topic number {i}. " * (1 + i % 4), "Here is an answer. " * (1 + 3 * i % 7))])
            for i in range(9)]
    rows.append(record(9, [("Hi there", "Hello! How can I help?"), ("Count to three", "1, 2, 3."),
                           ("Thanks", "You are welcome.")]))
    rows.append(alpaca(10, "Summarize the text", "Cats are small furry animals that purr.", "Cats are small."))
    return rows


@pytest.fixture(scope="session")
def gpt2_model(tmp_path_factory, shared_data) -> Path:
    """A random 2-layer GPT-2 with the real GPT-2 tokenizer (no BOS added on encode)."""
    tokenizer = GPT2TokenizerFast(tokenizer_file=str(shared_data / "tokenizers" / "gpt2" / "tokenizer.json"))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reference_mean_loss(model, ids: list[int], start: int) -> float:
    """Mean -log p(ids[p] | ids[:p]) for p >= start, via `model(labels=...)` as the authors' IFD code does."""
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :start] = -100
    with torch.no_grad():
        return float(model(input_ids=input_ids, labels=labels).loss)


def reference_next_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def make_scorer(scorer_type: str, model: Path, **options):
    """A loaded scorer of `scorer_type` reading `model` in fp32."""
    from deita_train.scoring import SCORERS, ScoringContext

    cls = SCORERS.get(scorer_type, "test")
    scorer = cls(cls.config_class(type=scorer_type, model=str(model), dtype="float32", **options), ScoringContext())
    scorer.load()
    return scorer


def assert_batched_equals_single(scorer, records: list[dict], atol: float = 1e-5) -> None:
    """Scores of the whole batch equal scores computed one record at a time."""
    import numpy as np

    batched = scorer.score_batch(records)
    for rec, together in zip(records, batched, strict=True):
        (alone,) = scorer.score_batch([rec])
        assert together.reason == alone.reason, rec["id"]
        if alone.value is not None:
            np.testing.assert_allclose(np.asarray(together.value, dtype=np.float64),
                                       np.asarray(alone.value, dtype=np.float64), rtol=0, atol=atol)
            for name, extra in alone.extras.items():
                np.testing.assert_allclose(together.extras[name], extra, rtol=0, atol=atol)
