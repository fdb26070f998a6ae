"""Whether a model named in a recipe can be found, checked before anything loads (light: no torch, no transformers)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def model_location_problem(name: str, key: str) -> str | None:
    """A message when `name` is neither a local model folder nor (offline) a cached hub model."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() and not (local / "tokenizer_config.json").is_file():
            return f"{key}: {name} is a folder with no config.json or tokenizer_config.json: not a model"
        return None
    if local.exists():
        return f"{key}: {name} is a file; give the model's folder"
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        return f"{key}: model folder not found: {name}"
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return (f"{key}: {name!r} is not a local folder and not in the Hugging Face cache (HF_HUB_OFFLINE=1); "
                    "download it first, or build a local model (deita-train tiny-model DIR)")
    return None
