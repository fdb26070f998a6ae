"""The recipe's typed sections. A recipe YAML maps one-to-one onto `Recipe`.

Scorer and strategy options are typed by the registered class's own config dataclass; the `sft` and
`dpo` blocks are TRL's own `SFTConfig` / `DPOConfig` fields, checked by name and type against TRL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SourceFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "preference"]


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
class SourceConfig:
    """One data source: a local json/jsonl/parquet file (optionally .gz) or a hub dataset id."""

    path: str = field(metadata={"help": "Local file or hub dataset id."})
    format: SourceFormat = field(default="auto", metadata={"help": "Record format; `auto` detects it per record."})
    split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    name: str | None = field(default=None, metadata={"help": "Configuration name of a hub dataset."})
    limit: int | None = field(default=None, metadata={"help": "Keep the first N records of this source."})
    sample: int | None = field(default=None, metadata={"help": "Keep N records drawn with the recipe seed."})
    fraction: float | None = field(
        default=None, metadata={"help": "Keep this fraction of records, drawn with the recipe seed."}
    )
    on_error: Literal["raise", "skip"] = field(
        default="raise",
        metadata={"help": "A bad record stops the run (`raise`) or is skipped and listed in the report (`skip`)."},
    )


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
    """`sft:` — TRL `SFTConfig` fields, passed straight to `SFTConfig(**args)`, and the stage's eval data."""

    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DPOStage(EvalData):
    """`dpo:` — a preference `dataset`, its eval data, and TRL `DPOConfig` fields."""

    dataset: list[SourceConfig] = field(default_factory=list)
    model: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class HubSection:
    """`hub:` — push the selected dataset, with a dataset card recording the selection (models: `sft.push_to_hub`)."""

    dataset_id: str = field(metadata={"help": "Hub repo id for the selected dataset, e.g. `me/deita-6k`."})
    private: bool = field(default=True, metadata={"help": "Create the dataset repo as private."})


@dataclass
class Recipe:
    """A whole run. Only the stages a recipe declares run."""

    output_dir: Path
    seed: int = 42
    model: ModelConfig | None = None
    pool: list[SourceConfig] = field(default_factory=list)
    score: dict[str, Any] = field(default_factory=dict)  # column name -> registered scorer's config
    select: Any = None  # deita_train.selection.base.SelectConfig
    sft: SFTStage | None = None
    dpo: DPOStage | None = None
    peft: PeftSection | None = None
    hub: HubSection | None = None
    callbacks: list[Any] = field(default_factory=list)  # deita_train.callbacks configs, in recipe order
    online: Any = None  # deita_train.online.config.OnlineConfig: re-selection inside the sft stage
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the resolved YAML, for printing

    @property
    def stages(self) -> list[str]:
        """The stages this recipe declares, in run order."""
        declared = {
            "score": bool(self.score),
            "select": self.select is not None,
            "sft": self.sft is not None,
            "dpo": self.dpo is not None,
        }
        return [name for name, present in declared.items() if present]
