"""`bench/training.py`: the parameter count behind its MFU and its packed-sequence check (no timing)."""

import pytest
import torch

from bench.training import LLAMA3, build_model, load_tokenizer, matmul_params, packed_isolation


@pytest.mark.skipif(not LLAMA3.is_dir(), reason="needs shared/data/tokenizers/llama3")
def test_1b_is_the_llama_3_2_1b_shape():
    tokenizer, _ = load_tokenizer(str(LLAMA3), "llama3")
    model = build_model("1b", tokenizer, "sdpa", torch.bfloat16, "meta")
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400  # tied embeddings
    assert matmul_params(model) == 1_235_814_400  # the tied LM head is a matmul: nothing to subtract


def test_sdpa_packed_conversation_sees_only_itself():
    tokenizer, _ = load_tokenizer("tiny", "chatml")
    model = build_model("tiny", tokenizer, "sdpa", torch.float32, "cpu")
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: why is the sky blue?"},
                          {"role": "assistant", "content": "Rayleigh scattering of sunlight. " * (i + 1)}]}
            for i in range(2)]
    packed_diff, control_diff = packed_isolation(model, tokenizer, rows)
    assert packed_diff < 1e-4 < control_diff
