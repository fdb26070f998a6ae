"""The `synth:` section's config classes (no torch, no transformers): what Magpie generates, with which model and
backend, how it tags, deduplicates, filters and pairs the result (docs/methods.md, Magpie synthesis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deita_train.recipe.ranges import at_least_one, in_unit_interval

BackendName = Literal["auto", "transformers", "vllm", "endpoint"]
TAG_NAMES = ("difficulty", "input_quality", "task_category")  # the judge's tags, named as Magpie's columns


@dataclass
class GeneratorConfig:
    """A model that generates text, and the backend that runs it.

    `auto` runs vLLM's offline engine when vLLM is installed and a GPU is present, else transformers `generate`;
    `endpoint` sends raw prompts to an OpenAI-compatible `/v1/completions` server (vLLM, SGLang) at `base_url`.
    """

    model: str | None = field(
        default=None, metadata={"help": "Local folder or hub id; its tokenizer gives the chat template and stops."}
    )
    backend: BackendName = field(default="auto", metadata={"help": "auto, transformers, vllm or endpoint."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Weights dtype (transformers, vLLM)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per `generate` call (transformers)."})
    base_url: str | None = field(
        default=None, metadata={"help": "Endpoint root, e.g. http://localhost:8000/v1 (endpoint backend)."}
    )
    served_model: str | None = field(
        default=None, metadata={"help": "Model name the endpoint serves; defaults to `model`."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the endpoint's API key, if any."}
    )
    concurrency: int = field(default=8, metadata={"help": "Requests in flight at once (endpoint)."})
    timeout: float = field(default=120.0, metadata={"help": "Seconds before a request is abandoned (endpoint)."})
    max_retries: int = field(
        default=3, metadata={"help": "Retries, with exponential backoff, of a failed or timed-out request (endpoint)."}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per vLLM engine."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "Share of GPU memory vLLM may take."})
    enable_prefix_caching: bool = field(
        default=True, metadata={"help": "vLLM prefix caching: every instruction prompt shares the template."}
    )
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM context length cap."})

    def problems(self, key: str) -> list[str]:
        problems = at_least_one(self, key, ("batch_size", "concurrency", "tensor_parallel_size", "max_model_len"))
        problems += in_unit_interval(self.gpu_memory_utilization, f"{key}.gpu_memory_utilization")
        if self.max_retries < 0:
            problems.append(f"{key}.max_retries: must be at least 0, got {self.max_retries}")
        if self.timeout <= 0:
            problems.append(f"{key}.timeout: must be positive, got {self.timeout}")
        if self.backend == "endpoint" and not self.base_url:
            problems.append(f"{key}.base_url: required with `backend: endpoint`, e.g. http://localhost:8000/v1")
        if self.backend != "endpoint" and self.base_url:
            problems.append(f"{key}.base_url: only read with `backend: endpoint`; set that or remove base_url")
        if self.model is None:
            problems.append(f"{key}.model: required (its tokenizer gives the chat template and stop tokens; with "
                            "`backend: endpoint`, a local copy of the served model's tokenizer is enough)")
        return problems


@dataclass
class SamplingConfig:
    """Sampling of one generation step; `temperature: 0` is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024

    def problems(self, key: str) -> list[str]:
        problems = at_least_one(self, key, ("max_tokens",)) + in_unit_interval(self.top_p, f"{key}.top_p")
        if self.temperature < 0:
            problems.append(f"{key}.temperature: must be at least 0, got {self.temperature}")
        return problems


@dataclass
class InstructionSampling(SamplingConfig):
    """Step 1: instructions sampled from the pre-query template alone (temperature 1.0, top_p 1.0)."""

    stop_at_newline: bool = field(
        default=True, metadata={"help": "Stop an instruction at its first newline, as the reference does."}
    )


@dataclass
class ResponseSampling(SamplingConfig):
    """Step 2: answers through the chat template, greedy by default."""

    temperature: float = 0.0
    max_tokens: int = 4096


@dataclass
class TagsConfig:
    """Tags on each instruction: the judge's difficulty/quality/category, reward, safety and language."""

    judge: GeneratorConfig | None = field(
        default=None, metadata={"help": "LLM judge answering the tag prompts in JSON (greedy)."}
    )
    tags: list[str] = field(
        default_factory=lambda: list(TAG_NAMES),
        metadata={"help": "Judge tags: difficulty, input_quality, task_category."},
    )
    judge_max_tokens: int = field(default=512, metadata={"help": "Most tokens of a judge's answer."})
    reward: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Options of the `reward` scorer (model, batch_tokens, ...) rating (instruction, response)."},
    )
    safety: GeneratorConfig | None = field(
        default=None, metadata={"help": "Guard model (Llama-Guard style: answers `safe` or `unsafe\\nS<n>`)."}
    )
    language: bool = field(default=False, metadata={"help": "Detect the instruction's language (langdetect)."})

    def problems(self, key: str) -> list[str]:
        problems = at_least_one(self, key, ("judge_max_tokens",))
        unknown = [tag for tag in self.tags if tag not in TAG_NAMES]
        if unknown:
            problems.append(f"{key}.tags: unknown tag(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(TAG_NAMES)}")
        if self.tags and self.judge is None:
            problems.append(f"{key}.judge: the tags {', '.join(self.tags)} need a judge model; set judge or tags: []")
        for name in ("judge", "safety"):
            if getattr(self, name) is not None:
                problems += getattr(self, name).problems(f"{key}.{name}")
        if self.reward is not None and "model" not in self.reward:
            problems.append(f"{key}.reward.model: required (a reward model, e.g. sfairXC/FsfairX-LLaMA3-RM-v0.1)")
        return problems


@dataclass
class RepetitionConfig:
    """Near-duplicate instructions: unit-vector sentence embeddings, exact L2 kNN (FAISS) through the selection
    stage's `dedup` code."""

    model: str = field(
        default="sentence-transformers/all-mpnet-base-v2", metadata={"help": "sentence-transformers encoder."}
    )
    neighbors: int = field(default=500, metadata={"help": "k of the kNN search."})
    radius: float = field(default=0.05, metadata={"help": "Squared L2 distance under which two rows repeat."})
    batch_size: int = field(default=64, metadata={"help": "Instructions per encoder batch."})
    drop_duplicates: bool = field(
        default=True, metadata={"help": "Drop rows with an earlier near-duplicate (else only tag them)."}
    )

    def problems(self, key: str) -> list[str]:
        problems = at_least_one(self, key, ("neighbors", "batch_size"))
        if not 0 < self.radius < 4:
            problems.append(f"{key}.radius: must be in (0, 4) for unit vectors, got {self.radius}")
        return problems


@dataclass
class PairsConfig(SamplingConfig):
    """DPO pairs: `responses` answers per instruction at `temperature`, reward-scored; chosen = highest, rejected =
    lowest (the first wins ties; a pair whose two ends tie is dropped)."""

    temperature: float = 0.8
    max_tokens: int = 4096
    responses: int = field(default=5, metadata={"help": "Answers sampled per instruction."})
    reward: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options of the `reward` scorer; `model` is required."}
    )

    def problems(self, key: str) -> list[str]:
        problems = super().problems(key)
        if self.responses < 2:
            problems.append(f"{key}.responses: must be at least 2 to make a pair, got {self.responses}")
        if self.temperature == 0:
            problems.append(f"{key}.temperature: must be positive (greedy answers would all be the same), "
                            f"got {self.temperature}")
        if "model" not in self.reward:
            problems.append(f"{key}.reward.model: required (a reward model, e.g. RLHFlow/ArmoRM-Llama3-8B-v0.1)")
        return problems


@dataclass
class SynthConfig:
    """`synth:` — Magpie (docs/methods.md, Magpie synthesis): instructions sampled from an aligned model's pre-query
    template, answered through its chat template, optionally for several turns; then tags, repetition, filters (the
    selection stage's filter language) and DPO pairs. Output: `synth/` under `output_dir`, a `datasets` dataset
    with `messages` and per-row provenance that `pool`, `score`, `select`, `sft` and `dpo` read as it is."""

    generator: GeneratorConfig = field(metadata={"help": "The aligned model that writes instructions and answers."})
    num_instructions: int = field(default=1000, metadata={"help": "Instruction prompts sampled (rows before drops)."})
    pre_query_template: str = field(
        default="auto",
        metadata={"help": "`auto` (derived from the chat template, else the table by model name), a table name "
                  "(llama3, qwen2, ...), or the template text itself."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "A system message rendered into the derived template."}
    )
    turns: int = field(default=1, metadata={"help": "User turns per conversation."})
    instruction: InstructionSampling = field(default_factory=InstructionSampling)
    response: ResponseSampling = field(default_factory=ResponseSampling)
    shard_size: int = field(default=256, metadata={"help": "Instructions per shard: the unit written and resumed."})
    tags: TagsConfig | None = None
    repetition: RepetitionConfig | None = None
    filters: list[str] = field(
        default_factory=list, metadata={"help": "Selection filter expressions over the tag columns; all must hold."}
    )
    pairs: PairsConfig | None = None

    def models(self) -> dict[str, str]:
        """Every model the stage runs, by the recipe key naming it."""
        models = {"synth.generator.model": self.generator.model}
        if self.tags is not None:
            models |= {f"synth.tags.{name}.model": getattr(self.tags, name).model for name in ("judge", "safety")
                       if getattr(self.tags, name) is not None}
            if self.tags.reward is not None:
                models["synth.tags.reward.model"] = self.tags.reward.get("model")
        if self.repetition is not None:
            models["synth.repetition.model"] = self.repetition.model
        if self.pairs is not None:
            models["synth.pairs.reward.model"] = self.pairs.reward.get("model")
        return {key: name for key, name in models.items() if isinstance(name, str)}

    def columns(self) -> set[str]:
        """The columns of `synth/data`, which `synth.filters` may read."""
        columns = {"id", "messages", "instruction", "response", "turns", "model", "backend", "pre_query_template",
                   "template_source", "sampling", "seed"}
        if self.tags is not None:
            columns |= {column for tag in self.tags.tags for column in (tag, f"{tag}_reason")}
            if self.tags.reward is not None:
                columns |= {"reward", "reward_reason"}
            if self.tags.safety is not None:
                columns |= {"safety", "safety_categories", "safety_reason"}
            if self.tags.language:
                columns |= {"language", "language_reason"}
        if self.repetition is not None:
            columns |= {"min_neighbor_distance", "repeat_count", "duplicate"}
        if self.pairs is not None:
            columns |= {"chosen", "rejected", "chosen_reward", "rejected_reward", "pair_reason"}
        return columns

    def problems(self) -> list[str]:
        problems = at_least_one(self, "synth", ("num_instructions", "turns", "shard_size"))
        problems += self.generator.problems("synth.generator")
        problems += self.instruction.problems("synth.instruction") + self.response.problems("synth.response")
        for name in ("tags", "repetition", "pairs"):
            if getattr(self, name) is not None:
                problems += getattr(self, name).problems(f"synth.{name}")
        return problems


def made_by_synth(path: str, recipe: Any) -> bool:
    """Whether a data source at `path` is (inside) the output this recipe's synth stage writes: it need not exist
    before the run, and its identity is the synth stage's plan."""
    if getattr(recipe, "synth", None) is None:
        return False
    output = (Path(recipe.output_dir) / "synth").resolve()
    return Path(path).expanduser().resolve().is_relative_to(output)
