"""The `score:` section's config classes, one per scorer type, on a light registry (no torch, no transformers).

`score:` maps a column name to `{type: <scorer>, ...options}`; the scorer classes (one module each) run them.
Each config lists its own problems (ranges) and the columns its scorer writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from deita_train.recipe.ranges import at_least_one
from deita_train.registry import Registry

Convention = Literal["superfiltering", "cherry"]


@dataclass
class ScorerConfig:
    """Options every scorer takes; a scorer's own config subclasses this."""

    type: str = field(metadata={"help": "Registered scorer name, e.g. `length`, `ifd`, `deita_quality`."})
    shard_size: int = field(
        default=1024,
        metadata={"help": "Records per cached shard: the unit the engine hands to `score_batch`, caches and resumes."},
    )

    # Inspection columns written beside the score, as `<column>_<name>`.
    extra_columns: ClassVar[tuple[str, ...]] = ()
    # Whether the scorer runs a model (its `model` is checked, and it needs one when the recipe has none).
    uses_model: ClassVar[bool] = False

    def problems(self, key: str) -> list[str]:
        """What is out of range in these options, each message starting with `key.<option>`."""
        return at_least_one(self, key, ("shard_size",))

    def columns(self, column: str) -> list[str]:
        """Every column the scorer adds to `scored/`: the score, its inspection extras, and the unscorable reason."""
        return [column, *(f"{column}_{name}" for name in self.extra_columns), f"{column}_reason"]


SCORER_CONFIGS: Registry[ScorerConfig] = Registry("scorer", names_classes=False)
register_scorer_config = SCORER_CONFIGS.register


@dataclass
class ModelScorerConfig(ScorerConfig):
    """Options shared by the scorers that run a model."""

    uses_model: ClassVar[bool] = True

    model: str | None = field(
        default=None, metadata={"help": "Local folder or hub id of the scoring model; defaults to the recipe's model."}
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Weights dtype; `auto` keeps the checkpoint's (bf16 is the GPU choice)."}
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"] = field(
        default="sdpa", metadata={"help": "Attention kernel of the scoring model."}
    )
    batch_tokens: int = field(
        default=16384, metadata={"help": "Token budget per forward pass: batch size x longest sequence (padded)."}
    )
    max_batch_size: int | None = field(
        default=None, metadata={"help": "Cap on sequences per forward pass, whatever the token budget."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code shipped with the scoring model (needed by some reward models)."}
    )

    def problems(self, key: str) -> list[str]:
        return at_least_one(self, key, ("shard_size", "batch_tokens", "max_batch_size", "max_length"))


@dataclass
class TurnLossConfig(ModelScorerConfig):
    """Options of the scorers built on per-turn answer losses (`ifd`, `ppl`, `loss`)."""

    convention: Convention = field(
        default="superfiltering",
        metadata={"help": "`superfiltering`: plain prompts (ifd = exp(Lc)/exp(Ld)); "
                  "`cherry`: Alpaca prompts (ifd = Lc/Ld)."},
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per pass; defaults to the convention's (1024 / 512)."}
    )


@register_scorer_config("ifd")
@dataclass
class IFDScorerConfig(TurnLossConfig):
    """`ifd` options (docs/methods.md, IFD)."""

    extra_columns: ClassVar[tuple[str, ...]] = ("loss_cond", "loss_direct")


@register_scorer_config("ppl")
@dataclass
class PerplexityScorerConfig(TurnLossConfig):
    """`ppl` options: the prompt convention and the pass length."""

    extra_columns: ClassVar[tuple[str, ...]] = ("loss",)


@register_scorer_config("loss")
@dataclass
class ConditionedLossConfig(TurnLossConfig):
    """`loss` options: the prompt convention and the pass length."""


@dataclass
class DeitaScorerConfig(ModelScorerConfig):
    """`deita_complexity` / `deita_quality` options (docs/methods.md, Deita scorers)."""

    max_length: int = field(
        default=2048, metadata={"help": "Prompt tokens (BOS included); longer turn text is cut to fit, and counted."}
    )


register_scorer_config("deita_complexity")(DeitaScorerConfig)
register_scorer_config("deita_quality")(DeitaScorerConfig)


@register_scorer_config("embedding")
@dataclass
class EmbeddingScorerConfig(ModelScorerConfig):
    """`embedding` options (docs/methods.md, Repr Filter)."""

    backend: Literal["transformers", "sentence_transformers"] = field(
        default="transformers", metadata={"help": "A causal LM (`transformers`) or a sentence-transformers model."}
    )
    pooling: Literal["last_token", "mean"] = field(
        default="last_token", metadata={"help": "`transformers` backend: last real token's hidden state, or the mean."}
    )
    max_length: int = field(
        default=2048, metadata={"help": "`transformers` backend: tokens read; longer conversations are cut, counted."}
    )
    storage_dtype: Literal["float32", "float16"] = field(
        default="float32", metadata={"help": "Dtype of the stored vectors."}
    )


@register_scorer_config("reward")
@dataclass
class RewardScorerConfig(ModelScorerConfig):
    """`reward` options."""

    max_length: int = field(
        default=4096, metadata={"help": "Tokens read per conversation; longer ones are cut at the end and counted."}
    )
    label: int = field(default=0, metadata={"help": "Which output logit is the reward (0 for one-head models)."})

    def problems(self, key: str) -> list[str]:
        negative = [f"{key}.label: must be at least 0, got {self.label}"] if self.label < 0 else []
        return super().problems(key) + negative


@register_scorer_config("length")
@dataclass
class LengthScorerConfig(ScorerConfig):
    """`length` options: the tokenizer to count with."""

    uses_model: ClassVar[bool] = True

    model: str | None = field(
        default=None, metadata={"help": "Tokenizer to count with; defaults to the recipe's model."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code shipped with that tokenizer (never inherited from `model:`)."}
    )
