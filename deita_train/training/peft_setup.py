"""LoRA and QLoRA from the recipe's `peft:` section, and saving adapters (optionally merged) after training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel
from transformers import BitsAndBytesConfig

from deita_train.training.config import PeftSection


def lora_config(section: PeftSection) -> LoraConfig:
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=section.r,
        lora_alpha=section.lora_alpha,
        lora_dropout=section.lora_dropout,
        target_modules=section.target_modules,
    )


def quantization_config(section: PeftSection) -> BitsAndBytesConfig | None:
    """4-bit NF4 weights for QLoRA; refuses clearly without bitsandbytes or a CUDA GPU."""
    if section.quantization is None:
        return None
    missing = [
        need
        for need, present in [
            ("bitsandbytes (pip install bitsandbytes)", importlib.util.find_spec("bitsandbytes") is not None),
            ("a CUDA GPU", torch.cuda.is_available()),
        ]
        if not present
    ]
    if missing:
        raise RuntimeError(f"peft.quantization: QLoRA needs {' and '.join(missing)}; "
                           "remove `quantization` to train plain LoRA")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def save_adapter(model: PeftModel, output_dir: Path, merge: bool) -> None:
    """The adapter goes to `output_dir/adapter`; with `merge`, the merged full model goes to `output_dir`."""
    model.save_pretrained(str(output_dir / "adapter"))
    if merge:
        model.merge_and_unload().save_pretrained(str(output_dir))
