"""Generation backends: transformers `generate`, vLLM's offline engine, an OpenAI-compatible endpoint.

`make_backend` imports the chosen one only, so neither vLLM nor a loaded model is needed to import this package.
The two helpers below are what every backend does the same way.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from deita_train.synth.backends.base import GenerationBackend, Sampling
from deita_train.synth.config import GeneratorConfig


def make_backend(config: GeneratorConfig) -> GenerationBackend:
    """The backend `config.backend` names; `auto` is vLLM when it is installed and a GPU is present, else
    transformers."""
    import torch

    backend = config.backend
    if backend == "auto":
        backend = "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"
    if backend == "vllm":
        from deita_train.synth.backends.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    if backend == "endpoint":
        from deita_train.synth.backends.endpoint import EndpointBackend

        return EndpointBackend(config)
    from deita_train.synth.backends.transformers_backend import TransformersBackend

    return TransformersBackend(config)


def samples_per_request(sampling: Sampling) -> int:
    """Completions to generate per prompt: greedy decoding gives `n` equal copies, so one is generated and copied."""
    return 1 if sampling.temperature == 0 else sampling.n


def request_seed(seed: int, index: int) -> int:
    """The seed of prompt `index` in a call seeded with `seed`, for engines that seed each request: distinct per
    prompt, so identical prompts (every instruction prompt is the same template) still get different samples."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)  # 31 bits: a non-negative int32
