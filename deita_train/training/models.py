"""Loading models and tokenizers, and checking that a model named in a recipe can be found."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from deita_train.recipe.schema import ModelConfig

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def model_location_problem(name: str, key: str) -> str | None:
    """A message when `name` is neither a local model folder nor (offline) a cached hub model."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() and not (local / "tokenizer_config.json").is_file():
            return f"{key}: {name} is a folder with no config.json or tokenizer_config.json: not a model"
        return None
    if local.exists():
        return f"{key}: {name} is a file; give the model's folder"
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        return f"{key}: model folder not found: {name}"
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return (f"{key}: {name!r} is not a local folder and not in the Hugging Face cache (HF_HUB_OFFLINE=1); "
                    "download it first, or build a local model (deita-train tiny-model DIR)")
    return None


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
