"""The `select:` and `hub:` sections' config classes, one per strategy, on a light registry (no torch, no datasets).

Each config lists its own problems (ranges, contradictions) and the expressions and columns it reads; the
strategies (one module each) run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deita_train.recipe.errors import RecipeError
from deita_train.recipe.ranges import at_least_one, in_unit_interval
from deita_train.registry import Registry
from deita_train.selection.eval_prompts import NAMED_SETS, PROMPT_FIELDS, eval_prompts


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
class EmbeddingMatchConfig:
    """`select.decontaminate.embedding`: also drop rows whose user turn is close in meaning to an eval prompt."""

    model: str = field(metadata={"help": "sentence-transformers model (local folder or hub id) encoding both sides."})
    threshold: float = field(
        default=0.9, metadata={"help": "Cosine similarity to an eval prompt at or above which a user turn matches."}
    )
    batch_size: int = field(default=64, metadata={"help": "Texts per encoder call."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repository's own code."})

    def problems(self, key: str) -> list[str]:
        return in_unit_interval(self.threshold, f"{key}.threshold") + at_least_one(self, key, ("batch_size",))


@dataclass
class DecontaminateConfig:
    """`select.decontaminate`: drop pool rows whose user turns overlap an eval set's prompts, before the filters.

    N-grams (after AllenAI open-instruct's decontamination): lowercased word tokens (runs of letters and digits). A
    row matches an eval prompt when a user turn shares an `ngram`-gram with it, or, for a prompt shorter than
    `ngram` words, when a user turn is exactly its words; its overlap is the share of the prompt's words inside a
    shared n-gram (1 for an exact short prompt). A row is contaminated when its overlap with some prompt is at
    least `min_overlap` (default: any shared n-gram), or, with `embedding`, a user turn is that similar to one.
    """

    sets: list[str] = field(metadata={"help": (
        f"Eval sets: {', '.join(NAMED_SETS)}, or a .jsonl/.json prompt file whose records hold one of "
        f"{', '.join(PROMPT_FIELDS)} (turns: a list, each a prompt)")})
    ngram: int = field(default=13, metadata={"help": "Words per n-gram (13, as open-instruct and GPT-3 use)."})
    min_overlap: float | None = field(default=None, metadata={"help": (
        "Share of an eval prompt's words inside n-grams shared with the row's user turns at which the row is "
        "contaminated, in (0, 1]; None: any shared n-gram")})
    embedding: EmbeddingMatchConfig | None = field(
        default=None, metadata={"help": "Also match by sentence-embedding similarity; None: n-grams only."}
    )
    batch_rows: int = field(default=8192, metadata={"help": "Pool rows read per batch."})

    def problems(self, key: str) -> list[str]:
        """Ranges; every set known or a readable prompt file with prompts; no set twice."""
        problems = at_least_one(self, key, ("ngram", "batch_rows")) + in_unit_interval(
            self.min_overlap, f"{key}.min_overlap")
        if not self.sets:
            problems.append(f"{key}.sets: list at least one eval set ({', '.join(NAMED_SETS)}) or prompt file")
        for i, entry in enumerate(self.sets):
            if entry in self.sets[:i]:
                problems.append(f"{key}.sets.{i}: {entry!r} is listed twice")
                continue
            try:
                if not eval_prompts(entry, f"{key}.sets.{i}"):
                    problems.append(f"{key}.sets.{i}: {entry!r} holds no prompt")
            except RecipeError as error:
                problems += error.problems
        return problems + (self.embedding.problems(f"{key}.embedding") if self.embedding else [])


@dataclass
class MixConfig:
    """`select.mix`: per-source shares of the budget; the strategy runs within each source's share (see mix.py)."""

    shares: dict[str, float] = field(
        metadata={"help": "Source (a value of `by`) -> its share of the budget; each above 0, summing to 1."}
    )
    by: str = field(
        default="source_file", metadata={"help": "Column naming a row's source (any string column)."}
    )
    shortfall: Literal["redistribute", "refuse"] = field(default="redistribute", metadata={"help": (
        "A source with fewer selectable rows than its share: `redistribute` the rows it lacks to the other "
        "sources by their shares; `refuse`: stop with an error naming it")})

    def problems(self, key: str) -> list[str]:
        """Every share a positive number under a string key; the shares summing to 1 (within 1e-6)."""
        problems = [f"{key}.shares.{name}: a source is a string: quote it" for name in self.shares
                    if not isinstance(name, str)]
        problems += [f"{key}.shares.{name}: must be above 0, got {share}" for name, share in self.shares.items()
                     if not share > 0]
        total = sum(self.shares.values())
        if not self.shares:
            problems.append(f"{key}.shares: give at least one source and its share")
        elif abs(total - 1) > 1e-6:
            problems.append(f"{key}.shares: must sum to 1, got {total:.6g}")
        return problems


@dataclass
class SelectConfig:
    """`select:` — decontamination and filters, then one strategy with its options (within each source's share,
    with `mix`)."""

    strategy: str
    options: StrategyConfig
    filters: list[str] = field(default_factory=list)
    decontaminate: DecontaminateConfig | None = None
    mix: MixConfig | None = None
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
