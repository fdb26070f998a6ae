"""`bench/scoring.py`: the FLOP count behind its MFU, the 13B shape, and its MFU path on a tiny model (no timing)."""

import argparse

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from bench.scoring import MFU_SIZES, SHARED, alpaca_rows, body_params, deita_mfu, forward_flops

LLAMA3 = SHARED / "tokenizers" / "llama3"
ALPACA = SHARED / "instruct" / "alpaca_original_random_9k.json"


def meta_model(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def test_gpt2_flops_are_the_textbook_count():
    model = meta_model(GPT2Config())
    layers, hidden, vocab = 12, 768, 50257
    assert body_params(model) == 12 * layers * hidden**2  # attention + MLP weights; embeddings and tied head out
    expected = 24 * layers * hidden**2 * 100 + 4 * layers * 100**2 * hidden + 2 * vocab * hidden * 7
    assert forward_flops(model, [100], [7]) == expected


def test_13b_is_the_llama_2_13b_shape():
    model = meta_model(LlamaConfig(vocab_size=32000, **MFU_SIZES["13b"]))
    assert sum(p.numel() for p in model.parameters()) == 13_015_864_320  # Llama-2-13B
    assert body_params(model) == 40 * (4 * 5120**2 + 3 * 5120 * 13824)


@pytest.mark.skipif(not (LLAMA3.is_dir() and ALPACA.is_file()), reason="needs shared/data")
def test_deita_mfu_scores_every_row_with_an_in_memory_model():
    args = argparse.Namespace(mfu_tokenizer=LLAMA3, mfu_size="tiny", device="cpu", dtype="float32",
                              mfu_batch_tokens=1024, warmup_rows=2, peak_flops=1e11)
    result = deita_mfu(args, alpaca_rows(ALPACA, 6, seed=0))
    assert result["scored"] == result["rows"] == 6
    assert result["tokens"] > 6 * 40 and 0 < result["mfu"] < 1
