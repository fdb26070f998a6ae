"""Generation backends: transformers `generate`, vLLM's offline engine, an OpenAI-compatible endpoint.

`make_backend` imports the chosen one only, so neither vLLM nor a loaded model is needed to import this package.
"""

from __future__ import annotations

import importlib.util

from deita_train.synth.backends.base import GenerationBackend
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
