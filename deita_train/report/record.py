"""The run record (`report/run.json`): what ran, with what, where, how long, and how training ended.

Besides each stage's status, fingerprint and seconds (written by the pipeline), it holds the resolved recipe, the
versions of the libraries the outputs depend on (and CUDA and the GPU name when present), the project's git commit
when deita-train runs from a checkout, the process count, and the final training and eval losses.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

VERSIONED = ("deita-train", "torch", "transformers", "trl", "accelerate", "datasets", "deepspeed", "peft")
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root when installed from a checkout (-e)


def versions() -> dict[str, str]:
    """Installed versions of deita-train and the libraries a stage's output depends on, and Python's."""
    found = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def hardware() -> dict[str, Any]:
    """CUDA's version and the GPU's name when there is one; the platform otherwise."""
    import torch

    if torch.cuda.is_available():
        return {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count()}
    return {"cpu": platform.machine(), "threads": torch.get_num_threads()}


def git_commit() -> str | None:
    """The checkout's commit (with `+dirty` when it has uncommitted changes), or None when not run from one."""
    if not (CHECKOUT / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def final_losses(trainer_dir: Path) -> dict[str, float] | None:
    """The last logged training loss and eval loss (and DPO's reward accuracy and margin) of a Trainer output."""
    state = trainer_dir / "trainer_state.json"
    if not state.is_file():
        return None
    history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    found = {}
    for name in ("loss", "eval_loss", "train_loss", "rewards/accuracies", "rewards/margins"):
        values = [entry[name] for entry in history if name in entry]
        if values:
            found[name] = values[-1]
    return found


def run_record(recipe: Any, processes: int, out: Path) -> dict[str, Any]:
    """The record's fields besides the stages: recipe, versions, hardware, commit, processes, final losses."""
    record = {"recipe": recipe.raw, "versions": versions(), "hardware": hardware(), "git_commit": git_commit(),
              "processes": processes}
    losses = {stage: found for stage in ("sft", "dpo") if (found := final_losses(out / stage))}
    if losses:
        record["final_losses"] = losses
    return record
