"""The callback contract and registry, and the two calls a recipe's `callbacks:` list goes through.

A recipe lists callbacks as mappings, `{name: <registered>, ...options}`. `parse_callbacks` checks every
entry against its callback's config dataclass when the recipe is loaded (no model, no data);
`instantiate_callbacks` turns the parsed configs into `TrainerCallback`s once the run's data exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, load_from_disk
from transformers import TrainerCallback

from deita_train.recipe.errors import RecipeError
from deita_train.recipe.strict import build_registered
from deita_train.registry import Registry


@dataclass
class CallbackConfig:
    """Options every callback takes; a callback's own config subclasses this."""

    name: str = field(metadata={"help": "Registered callback name: `score_logger`, `eval` or `selection_stats`."})


@dataclass
class CallbackContext:
    """What callbacks may need from the run besides their own options.

    `pool` is the scored pool (`<output_dir>/scored`, or the pool as loaded when the recipe does not score),
    `selected` the selected rows, `train_dataset` the rows the trainer trains on, in the trainer's order
    (with `id`), and `selection_path` the `selection.json` written by the select stage.
    """

    output_dir: Path
    pool: Dataset | None = None
    selected: Dataset | None = None
    train_dataset: Dataset | None = None
    selection_path: Path | None = None

    @classmethod
    def from_output_dir(cls, output_dir: Path) -> CallbackContext:
        """The context of a finished select stage: `scored/`, `selected/` and `selection.json` under `output_dir`.

        The selected rows are also the train dataset, as the sft stage trains on them in order.
        """
        output_dir = Path(output_dir)
        for needed in ("scored", "selected", "selection.json"):
            if not (output_dir / needed).exists():
                raise FileNotFoundError(f"{output_dir / needed} does not exist: run `deita-train score` and `select`")
        selected = load_from_disk(str(output_dir / "selected"))
        return cls(
            output_dir=output_dir,
            pool=load_from_disk(str(output_dir / "scored")),
            selected=selected,
            train_dataset=selected,
            selection_path=output_dir / "selection.json",
        )


class RecipeCallback(TrainerCallback):
    """A `TrainerCallback` built from a recipe entry. Subclasses set `config_class` and the Trainer hooks."""

    name: ClassVar[str]
    config_class: ClassVar[type[CallbackConfig]] = CallbackConfig

    def __init__(self, config: CallbackConfig, context: CallbackContext) -> None:
        self.config = config
        self.context = context


CALLBACKS: Registry[RecipeCallback] = Registry("callback")
register_callback = CALLBACKS.register


def parse_callbacks(data: Any, problems: list[str], key: str = "callbacks") -> list[CallbackConfig]:
    """Typed configs for a recipe's `callbacks:` list; each problem, prefixed with its key, goes to `problems`."""
    if not isinstance(data, list):
        problems.append(f"{key}: expected a list of mappings like {{name: score_logger}}, got {type(data).__name__}")
        return []
    configs = [build_registered(CALLBACKS, entry, f"{key}.{i}", "name", problems, config_of=config_class)
               for i, entry in enumerate(data)]
    return [config for config in configs if config is not None]


def config_class(callback: type[RecipeCallback]) -> type[CallbackConfig]:
    return callback.config_class


def instantiate_callbacks(configs: list[CallbackConfig], context: CallbackContext) -> list[TrainerCallback]:
    """One callback per parsed config, in recipe order."""
    return [CALLBACKS.get(config.name, "callbacks")(config, context) for config in configs]


def build_callbacks(specs: list[dict[str, Any]], context: CallbackContext) -> list[TrainerCallback]:
    """Parse the raw `callbacks:` list and build the callbacks; raises `RecipeError` listing every problem."""
    problems: list[str] = []
    configs = parse_callbacks(specs, problems)
    if problems:
        raise RecipeError(problems)
    return instantiate_callbacks(configs, context)
