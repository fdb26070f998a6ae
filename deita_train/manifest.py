"""Stage manifests: each stage's output is recorded with what made it, so stages form a build, not a pile of folders.

A `StagePlan` holds what a stage's output depends on: a digest per recipe section it reads, and a fingerprint per
input (the stage before it, source files, models). `<output_dir>/manifests/<stage>.json` is written after the output
is complete (and removed before a stage starts), so a manifest whose fingerprint equals the plan's means the output
on disk is exactly what this recipe would make. `run` skips such a stage; a stage whose input was made by another
configuration is refused, naming the sections that differ.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deita_train.errors import UserError
from deita_train.fingerprints import digest
from deita_train.storage import write_json

logger = logging.getLogger(__name__)

STAGE_OUTPUTS = {"synth": "synth", "score": "scored", "select": "selected", "sft": "sft", "dpo": "dpo"}
STAGE_COMMANDS = {"synth": "synth", "score": "score", "select": "select", "sft": "train", "dpo": "train"}


class StaleInputError(UserError):
    """A stage's input on disk is missing, or was made by another configuration."""


@dataclass(frozen=True)
class StagePlan:
    """What one stage's output depends on."""

    stage: str
    output_dir: Path
    sections: dict[str, str] = field(default_factory=dict)  # recipe section -> digest of its resolved config
    inputs: dict[str, str] = field(default_factory=dict)  # input -> its fingerprint

    @property
    def fingerprint(self) -> str:
        return digest({"stage": self.stage, "sections": self.sections, "inputs": self.inputs})

    @property
    def output(self) -> Path:
        return self.output_dir / STAGE_OUTPUTS[self.stage]

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / "manifests" / f"{self.stage}.json"

    def recorded(self) -> dict[str, Any] | None:
        """The manifest on disk, or None."""
        if not self.manifest_path.is_file():
            return None
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def up_to_date(self) -> bool:
        """Whether the output exists and its manifest says this plan made it."""
        recorded = self.recorded()
        return self.output.exists() and recorded is not None and recorded["fingerprint"] == self.fingerprint

    def differences(self) -> list[str]:
        """What differs between this plan and the manifest on disk, e.g. `select (section)`, `pool (input)`."""
        recorded = self.recorded()
        if recorded is None:
            return ["no manifest (the output predates manifests, or its stage did not finish)"]
        return ([f"{name} (section)" for name in sorted(self.sections.keys() | recorded["sections"].keys())
                 if self.sections.get(name) != recorded["sections"].get(name)]
                + [f"{name} (input)" for name in sorted(self.inputs.keys() | recorded["inputs"].keys())
                   if self.inputs.get(name) != recorded["inputs"].get(name)])

    def start(self) -> None:
        """Forget the old manifest before the stage rewrites its output (a killed stage leaves none)."""
        self.manifest_path.unlink(missing_ok=True)

    def finish(self, versions: dict[str, str]) -> None:
        """Record that the output is complete and what made it."""
        write_json(self.manifest_path, {
            "stage": self.stage, "fingerprint": self.fingerprint, "sections": self.sections, "inputs": self.inputs,
            "versions": versions | {"python": platform.python_version()},
        })

    def require(self, invocation: str) -> None:
        """Refuse, naming the fix, unless the output on disk was made by this plan."""
        if self.up_to_date():
            return
        fix = f"run `deita-train {STAGE_COMMANDS[self.stage]} {invocation}` first (or `deita-train run {invocation}`)"
        if not self.output.exists():
            raise StaleInputError(f"{self.output} does not exist: {fix}")
        raise StaleInputError(f"{self.output} was made by another configuration ({', '.join(self.differences())} "
                              f"differ from this recipe's); {fix}")
