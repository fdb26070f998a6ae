"""The `select:` and `hub:` sections' config classes, one per strategy, on a light registry (no torch, no datasets).

Each config lists its own problems (ranges, contradictions) and the expressions and columns it reads; the
strategies (one module each) run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deita_train.recipe.ranges import at_least_one, in_unit_interval
from deita_train.registry import Registry


@dataclass
class StrategyConfig:
    """Options every strategy takes; a strategy's own config subclasses this."""

    budget: int | None = field(default=None, metadata={"help": "Rows to keep; None keeps all that pass."})

    def problems(self, key: str) -> list[str]:
        """What is out of range in these options, each message starting with `key.<option>`."""
        if self.budget is not None and self.budget < 1:
            return [f"{key}.budget: must be at least 1 (the rows to keep), got {self.budget}"]
        return []

    def expressions(self) -> dict[str, str]:
        """Option name -> score expression this strategy evaluates (`score`, where the config has one)."""
        score = vars(self).get("score")
        return {"score": score} if score else {}

    def vector_columns(self) -> dict[str, str]:
        """Option name -> embedding column this strategy reads (`embedding`, where the config has one)."""
        embedding = vars(self).get("embedding")
        return {"embedding": embedding} if embedding else {}


def required_budget(config: StrategyConfig, key: str, strategy: str, what: str) -> list[str]:
    return [f"{key}.budget: `{strategy}` needs a budget ({what})"] if config.budget is None else []


@dataclass
class SelectConfig:
    """`select:` — filters, then one strategy with its options."""

    strategy: str
    options: StrategyConfig
    filters: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


STRATEGY_CONFIGS: Registry[StrategyConfig] = Registry("strategy", names_classes=False)
register_strategy_config = STRATEGY_CONFIGS.register
register_strategy_config("random")(StrategyConfig)


@register_strategy_config("top_k")
@dataclass
class TopKConfig(StrategyConfig):
    score: str = field(default="score", metadata={"help": "Score expression (per-turn lists are summed) to rank by."})


@register_strategy_config("threshold")
@dataclass
class ThresholdConfig(StrategyConfig):
    """Options of `threshold`: at least one of `min` and `max`."""

    score: str = field(default="score", metadata={"help": "Score expression (per-turn lists are summed)."})
    min: float | None = field(default=None, metadata={"help": "Keep rows with score >= min."})
    max: float | None = field(default=None, metadata={"help": "Keep rows with score <= max."})
    order: Literal["score", "pool"] = field(
        default="score", metadata={"help": "`score`: descending score (ties: lower id); `pool`: pool order."}
    )

    def problems(self, key: str) -> list[str]:
        problems = super().problems(key)
        if self.min is None and self.max is None:
            problems.append(f"{key}: `threshold` needs `min`, `max` or both")
        elif self.min is not None and self.max is not None and self.min > self.max:
            problems.append(f"{key}.min: {self.min} is above max ({self.max}), so no row can pass; swap them")
        return problems


@register_strategy_config("deita")
@dataclass
class DeitaConfig(StrategyConfig):
    """Options of `deita`. `budget` defaults to 6000, the Deita-6K size."""

    budget: int | None = field(default=6000, metadata={"help": "Rows to keep (Deita-6K: 6000); None: no limit."})
    score: str = field(
        default="complexity * quality",
        metadata={"help": "Score expression; per-turn lists multiply elementwise, then sum over turns."},
    )
    embedding: str = field(default="embedding", metadata={"help": "Column holding one embedding vector per row."})
    threshold: float = field(
        default=0.9, metadata={"help": "Keep a row iff its max cosine to the selected rows is <= this."}
    )
    block_size: int = field(default=1024, metadata={"help": "Candidates tested per matrix product."})
    device: str | None = field(default=None, metadata={"help": "torch device; None: cuda when available, else cpu."})

    def problems(self, key: str) -> list[str]:
        problems = super().problems(key) + at_least_one(self, key, ("block_size",))
        if not -1 < self.threshold < 1:
            problems.append(f"{key}.threshold: must be in (-1, 1), the cosine similarity to a selected row above "
                            f"which a row is rejected, got {self.threshold}: at 1 or more every row passes (that is "
                            "top_k), at -1 or less only the first row does")
        return problems


@register_strategy_config("superfilter")
@register_strategy_config("cherry")
@dataclass
class IFDConfig(StrategyConfig):
    """Options of `superfilter` and `cherry`: `budget` (a count) or `fraction`, not both."""

    score: str = field(default="mean(ifd)", metadata={"help": "IFD expression; default: mean over turns."})
    fraction: float | None = field(
        default=None, metadata={"help": "Share to keep: of the whole pool (superfilter) or of valid rows (cherry)."}
    )
    keep_pool_order: bool = field(default=False, metadata={"help": "Return the kept rows in pool order."})

    def problems(self, key: str) -> list[str]:
        problems = super().problems(key) + in_unit_interval(self.fraction, f"{key}.fraction")
        if (self.budget is None) == (self.fraction is None):
            problems.append(f"{key}: give exactly one of `budget` (a count) or `fraction`")
        return problems


@register_strategy_config("facility_location")
@dataclass
class FacilityLocationConfig(StrategyConfig):
    """Options of `facility_location`; `budget` is required (the paper keeps 2% of the pool)."""

    score: str = field(default="mean(ifd)", metadata={"help": "Pre-selection score expression (IFD)."})
    below: float | None = field(default=1.0, metadata={"help": "Keep only scores strictly below this; None: all."})
    preselect: float = field(default=0.2, metadata={"help": "Fraction of the whole pool pre-selected by score."})
    embedding: str = field(default="embedding", metadata={"help": "Column holding one embedding vector per row."})
    max_matrix_rows: int = field(
        default=8192, metadata={"help": "Build the full n x n similarity matrix (float64) only up to this many rows."}
    )
    block_size: int = field(default=1024, metadata={"help": "Rows per block when summing initial gains."})
    device: str | None = field(default=None, metadata={"help": "torch device; None: cuda when available, else cpu."})

    def problems(self, key: str) -> list[str]:
        return (super().problems(key) + required_budget(self, key, "facility_location", "rows to keep")
                + in_unit_interval(self.preselect, f"{key}.preselect")
                + at_least_one(self, key, ("max_matrix_rows", "block_size")))


@register_strategy_config("kcenter")
@dataclass
class KCenterConfig(StrategyConfig):
    """Options of `kcenter`; `budget` (the number of centers) is required."""

    embedding: str = field(default="embedding", metadata={"help": "Column holding one embedding vector per row."})
    metric: Literal["euclidean", "cosine"] = field(
        default="euclidean", metadata={"help": "`cosine` measures euclidean distance between unit vectors."}
    )
    score: str | None = field(default=None, metadata={"help": "Score expression choosing the first center."})
    device: str | None = field(default=None, metadata={"help": "torch device; None: cuda when available, else cpu."})

    def problems(self, key: str) -> list[str]:
        return super().problems(key) + required_budget(self, key, "kcenter", "the number of centers")


@register_strategy_config("dedup")
@dataclass
class DedupConfig(StrategyConfig):
    """Options of `dedup`."""

    embedding: str = field(default="embedding", metadata={"help": "Column holding one embedding vector per row."})
    radius: float = field(default=0.05, metadata={"help": "Squared L2 distance below which two rows repeat."})
    normalize: bool = field(default=True, metadata={"help": "L2-normalize embeddings first (Magpie does)."})
    backend: Literal["auto", "faiss", "torch"] = field(
        default="auto", metadata={"help": "`auto`: torch when CUDA is present, else faiss (CPU)."}
    )
    index: Literal["flat", "ivf"] = field(
        default="flat", metadata={"help": "FAISS index: `flat` exact; `ivf` approximate, for millions of rows."}
    )
    nlist: int | None = field(default=None, metadata={"help": "IVF cells; None: 4 * sqrt(n)."})
    nprobe: int = field(default=16, metadata={"help": "IVF cells visited per query."})
    neighbors: int = field(
        default=16, metadata={"help": "k of the k-NN pass; rows with all k inside the radius get a range search."}
    )
    query_block: int = field(default=65536, metadata={"help": "Queries per search call (bounds result memory)."})

    def problems(self, key: str) -> list[str]:
        problems = super().problems(key) + at_least_one(self, key, ("nlist", "nprobe", "neighbors", "query_block"))
        if self.radius <= 0 or (self.normalize and self.radius >= 4):
            upper = " and below 4 (unit vectors are at most 4 apart, squared)" if self.normalize else ""
            problems.append(f"{key}.radius: must be above 0{upper}, got {self.radius}")
        return problems


@dataclass
class HubSection:
    """`hub:` — push the selected dataset, with a dataset card recording the selection (models: `sft.push_to_hub`)."""

    dataset_id: str = field(metadata={"help": "Hub repo id for the selected dataset, e.g. `me/deita-6k`."})
    private: bool = field(default=True, metadata={"help": "Create the dataset repo as private."})
