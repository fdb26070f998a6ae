"""Which stage owns each recipe section: the table the recipe loader dispatches through (`recipe/` itself imports
no stage), and `load_recipe`, the one entry point to a checked `Recipe`. An owner is imported only when its section
is present, so `validate` on a recipe without training never imports TRL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deita_train.recipe import loading
from deita_train.recipe.schema import Recipe

SECTIONS = {
    "model": "deita_train.training.section:MODEL",
    "pool": "deita_train.data.section:POOL",
    "score": "deita_train.scoring.section:SCORE",
    "select": "deita_train.selection.section:SELECT",
    "hub": "deita_train.selection.section:HUB",
    "sft": "deita_train.training.section:SFT",
    "dpo": "deita_train.training.section:DPO",
    "peft": "deita_train.training.section:PEFT",
    "callbacks": "deita_train.callbacks.section:CALLBACKS",
    "online": "deita_train.online.section:ONLINE",
    "synth": "deita_train.synth.section:SYNTH",
}


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, merge (`extends:`), override, parse and check the recipe at `path`; loads no model and no data."""
    return loading.load_recipe(path, overrides, SECTIONS)
