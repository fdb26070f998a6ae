"""Loading models and tokenizers, and checking that a model named in a recipe can be found."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from deita_train.training.config import ModelConfig

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)


def load_causal_lm(
    config: ModelConfig, name_or_path: str | None = None, quantization_config: BitsAndBytesConfig | None = None
) -> PreTrainedModel:
    """The causal LM of `config` (or `name_or_path`, e.g. the SFT output) with the recipe's dtype and attention."""
    return AutoModelForCausalLM.from_pretrained(
        name_or_path or config.name_or_path,
        dtype=DTYPES[config.dtype],
        attn_implementation=config.attn_implementation,
        trust_remote_code=config.trust_remote_code,
        quantization_config=quantization_config,
    )
