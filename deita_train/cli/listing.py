"""`deita-train list [scorers|strategies|callbacks|templates]`: what a recipe can name, with every option.

Options come straight from the config dataclasses: each field's name, type, default and `metadata["help"]`. The
scorer and strategy configs and the template tables are light (no torch); the callbacks' configs live beside their
`TrainerCallback`s, so listing them (`list callbacks`, or `list` alone) imports transformers: about 4 s more.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from deita_train.data.chat_templates import END_OF_TURN, TEMPLATE_NAMES
from deita_train.scoring.config import SCORER_CONFIGS
from deita_train.selection.config import STRATEGY_CONFIGS
from deita_train.synth.templates import PRE_QUERY_TEMPLATES

KINDS = ("scorers", "strategies", "callbacks", "templates")
# The field a recipe names the entry with: shown in the heading, not as an option.
NAME_FIELDS = {"scorers": "type", "callbacks": "name"}
HEADINGS = {
    "scorers": "scorers  (score: {COLUMN: {type: NAME, ...options}})",
    "strategies": "strategies  (select: {strategy: NAME, ...options})",
    "callbacks": "callbacks  (callbacks: [{name: NAME, ...options}])",
}


def list_command(kind: str | None) -> int:
    """Print one kind, or all four; exit code 0."""
    print("\n\n".join(section(each) for each in ([kind] if kind else KINDS)))
    return 0


def section(kind: str) -> str:
    if kind == "templates":
        return templates()
    entries = [entry(name, config, NAME_FIELDS.get(kind)) for name, config in configs(kind).items()]
    return "\n\n".join([f"== {HEADINGS[kind]}", *entries])


def configs(kind: str) -> dict[str, type]:
    """Registered name -> config dataclass, by name."""
    if kind == "callbacks":
        from deita_train.callbacks import CALLBACKS

        return {name: CALLBACKS.get(name, "callbacks").config_class for name in CALLBACKS.names()}
    registry = SCORER_CONFIGS if kind == "scorers" else STRATEGY_CONFIGS
    return {name: registry.get(name, kind) for name in registry.names()}


def entry(name: str, config: type, name_field: str | None) -> str:
    """`name  (ConfigClass)`, then one line per option: `  option: type = default  help`."""
    hints = typing.get_type_hints(config)
    lines = [f"{name}  ({config.__name__})"]
    for option in dataclasses.fields(config):
        if option.init and option.name != name_field:
            lines.append(f"  {option.name}: {type_name(hints[option.name])}{default(option)}  "
                         f"{option.metadata.get('help', '')}".rstrip())
    return "\n".join(lines)


def default(option: dataclasses.Field) -> str:
    """` = <repr of the default>`, or ` (required)`."""
    if option.default is not dataclasses.MISSING:
        return f" = {option.default!r}"
    if option.default_factory is not dataclasses.MISSING:
        return f" = {option.default_factory()!r}"
    return " (required)"


def type_name(hint: Any) -> str:
    """A type as a recipe author reads it: `int | None`, `'a' | 'b'` for a Literal, `list[str]`."""
    if hint is type(None):
        return "None"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(value) for value in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(hint))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in typing.get_args(hint))}]"
    return hint.__name__


def templates() -> str:
    """Chat templates (`model.chat_template`) and Magpie's pre-query templates (`synth.pre_query_template`)."""
    notes = {name: f"  (turns end with {token}, made the EOS)" for name, token in END_OF_TURN.items()}
    notes["model"] = "  (the tokenizer's own template)"
    chat = [f"  {name}{notes.get(name, '')}" for name in TEMPLATE_NAMES]
    pre_query = [f"  {name}: {text!r}" for name, text in PRE_QUERY_TEMPLATES.items()]
    return "\n".join([
        "== chat templates  (model.chat_template; they mark assistant turns for assistant-only loss)",
        *chat,
        "",
        "== pre-query templates (synth)  (synth.pre_query_template: auto, a name below, or the template text)",
        *pre_query,
    ])
