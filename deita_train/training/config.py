"""The `model:`, `sft:`, `dpo:` and `peft:` sections' config classes (light: no torch, no TRL import).

`sft:` and `dpo:` carry TRL's own `SFTConfig` / `DPOConfig` fields, checked by name and type against TRL by
`training/section.py` before anything loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deita_train.data.config import SourceConfig


@dataclass
class ModelConfig:
    """The model to train (and the default tokenizer for tokenizer-based scorers)."""

    name_or_path: str = field(metadata={"help": "Local directory or hub id of the base model."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Weights dtype when loading; `auto` uses the checkpoint's."}
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"] | None = field(
        default=None, metadata={"help": "Attention kernel; None lets transformers choose (SDPA when available)."}
    )
    chat_template: str = field(
        default="model",
        metadata={"help": "`vicuna_v1.1`, `chatml`, or `model` (the tokenizer's own template)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model."})


@dataclass
class PeftSection:
    """`peft:` — train LoRA adapters (QLoRA with `quantization: 4bit`) in both sft and dpo."""

    r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = lora_alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "Modules to adapt: `all-linear` or a list of module names."}
    )
    quantization: Literal["4bit"] | None = field(
        default=None, metadata={"help": "`4bit` loads the base in NF4 (QLoRA; needs bitsandbytes and a GPU)."}
    )
    merge: bool = field(
        default=True,
        metadata={"help": "Also save the merged model in the stage folder (DPO starts from it); "
                  "the adapter is always saved under <stage>/adapter."},
    )


@dataclass
class EvalData:
    """A stage's held-out data: `eval_dataset` sources, or `eval_split` rows held out of its train rows."""

    eval_dataset: list[SourceConfig] = field(default_factory=list)
    eval_split: int | float | None = None  # a fraction in (0, 1) or a row count, drawn with the recipe seed

    @property
    def has_eval_data(self) -> bool:
        return bool(self.eval_dataset) or self.eval_split is not None


@dataclass
class SFTStage(EvalData):
    """`sft:` — TRL `SFTConfig` fields, passed straight to `SFTConfig(**args)`, the stage's eval data, and the
    per-sample loss weight."""

    args: dict[str, Any] = field(default_factory=dict)
    sample_weight: str | None = None  # expression over the train row's columns: its loss weight (weights.py)


@dataclass
class DPOStage(EvalData):
    """`dpo:` — a preference `dataset`, its eval data, TRL `DPOConfig` fields, and the per-pair loss weight."""

    dataset: list[SourceConfig] = field(default_factory=list)
    model: str | None = None  # start from this model instead of the sft output / the recipe's model
    trust_remote_code: bool = False  # run code shipped with `model` (never inherited from `model:`)
    args: dict[str, Any] = field(default_factory=dict)
    sample_weight: str | None = None  # expression over the pair's columns: its loss weight (weights.py)
