"""vLLM's offline engine behind the backend contract (the engine Magpie samples with).

Prompts go in as token ids (`add_special_tokens=False`), since vLLM would add BOS again to text for tokenizers that
add it on encode, and every template here already holds it. Each prompt gets its own seed (`request_seed`), so
identical prompts still get different samples; the model's `generation_config` sampling defaults do not apply to
explicit `SamplingParams`. `tokens` is the length of vLLM's output ids (the stop token included).
vLLM is imported when the backend is built, so this module imports without it.

Data parallel: under `accelerate launch --num_processes N`, process i's engine gets GPUs
i x tensor_parallel_size ... (i + 1) x tensor_parallel_size - 1 of its node, through `CUDA_VISIBLE_DEVICES` set
before the engine (which runs in a process of its own) starts; otherwise every engine would start on GPU 0. Not yet
run on a GPU (vLLM is not installed where this was written).
"""

from __future__ import annotations

import os

from deita_train.synth.backends.base import Completion, GenerationBackend, Sampling, request_seed, samples_per_request
from deita_train.synth.config import GeneratorConfig

ENGINE_SEED = 0  # seeds the engine's own RNG; every request carries its own seed


class VLLMBackend(GenerationBackend):
    """`vllm.LLM.generate` over all prompts of a call at once (vLLM schedules the batches itself)."""

    name = "vllm"

    def __init__(self, config: GeneratorConfig) -> None:
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError("synth generator backend `vllm` needs vLLM: pip install vllm (or pip install "
                              "'deita-train[vllm]'), or set backend: transformers") from error
        visible_gpus(config.tensor_parallel_size)
        self.llm = LLM(
            model=config.model,
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            enable_prefix_caching=config.enable_prefix_caching,
            max_model_len=config.max_model_len,
            trust_remote_code=config.trust_remote_code,
            seed=ENGINE_SEED,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def complete(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        requested = samples_per_request(sampling)
        params = [
            SamplingParams(
                n=requested, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                stop=list(sampling.stop), stop_token_ids=list(sampling.stop_token_ids),
                seed=request_seed(sampling.seed, index),
            )
            for index in range(len(prompts))
        ]
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=row) for row in ids], params, use_tqdm=False)
        return [
            [
                Completion(output.text, "length" if output.finish_reason == "length" else "stop", len(output.token_ids))
                for output in sorted(request.outputs, key=lambda output: output.index)
            ] * (sampling.n // requested)  # greedy: one answer, `n` copies
            for request in outputs
        ]

    def close(self) -> None:
        """Drop this backend's engine (vLLM frees its GPU memory once nothing else holds the engine)."""
        del self.llm


def visible_gpus(per_engine: int) -> None:
    """Show this process's engine its own GPUs of the node when several processes were launched."""
    import torch

    from deita_train.processes import process_state

    state = process_state()
    if state.num_processes > 1:
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = listed.split(",") if listed else [str(i) for i in range(torch.cuda.device_count())]
        first = state.local_process_index * per_engine
        if first + per_engine > len(gpus):
            raise ValueError(f"synth.generator.tensor_parallel_size: {per_engine} GPUs for each of this node's "
                             f"processes, but it has {len(gpus)} GPUs; launch fewer processes")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[first : first + per_engine])
