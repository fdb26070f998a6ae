"""`Recipe`: a whole run, one attribute per recipe section.

Each section's config class belongs to the stage that reads it (`data/config.py`, `scoring/config.py`,
`selection/config.py`, `training/config.py`, `online/config.py`, the callbacks' configs); this package
knows sections, not stages, so the attributes are typed by what they hold, not by import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Recipe:
    """A whole run: `output_dir`, `seed`, and one attribute per section (absent sections keep the default).
    Only the stages a recipe declares run."""

    output_dir: Path
    seed: int = 42
    model: Any = None  # training/config.py ModelConfig: the model to train
    pool: list[Any] = field(default_factory=list)  # data/config.py SourceConfig, in recipe order
    score: dict[str, Any] = field(default_factory=dict)  # column name -> scoring/config.py ScorerConfig
    select: Any = None  # selection/config.py SelectConfig
    sft: Any = None  # training/config.py SFTStage
    dpo: Any = None  # training/config.py DPOStage
    peft: Any = None  # training/config.py PeftSection
    hub: Any = None  # selection/config.py HubSection
    callbacks: list[Any] = field(default_factory=list)  # the callbacks' configs, in recipe order
    online: Any = None  # online/config.py OnlineConfig: re-selection inside the sft stage
    synth: Any = None  # synth/config.py SynthConfig: Magpie synthesis, before the pool is read
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the resolved YAML, for printing

    @property
    def stages(self) -> list[str]:
        """The stages this recipe declares, in run order."""
        declared = {
            "synth": self.synth is not None,
            "score": bool(self.score),
            "select": self.select is not None,
            "sft": self.sft is not None,
            "dpo": self.dpo is not None,
        }
        return [name for name, present in declared.items() if present]
