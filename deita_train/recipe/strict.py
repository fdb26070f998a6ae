"""Strict conversion of parsed YAML into typed dataclasses.

Unknown keys are errors with a did-you-mean hint, values are checked against the field's type hint,
and every problem is collected (prefixed with its dotted key) instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from deita_train.recipe.errors import RecipeError
from deita_train.registry import Registry, did_you_mean


def build(cls: type, data: Any, key: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from mapping `data`; append problems (prefixed with `key`) to `problems`.

    Returns the instance, or None when any problem was found in this mapping.
    """
    if not isinstance(data, dict):
        problems.append(f"{key}: expected a mapping with keys {field_names(cls)}, got {type_name(data)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    before = len(problems)
    for name, value in data.items():
        child = f"{key}.{name}" if key else str(name)
        if name not in fields:
            problems.append(f"{child}: unknown key{did_you_mean(name, fields)}")
            continue
        values[name] = convert(value, hints[name], child, problems)
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{key + '.' if key else ''}{name}: required key is missing")
    if len(problems) > before:
        return None
    try:
        return cls(**values)
    except RecipeError as error:  # a config's own check of contradictory options
        problems += [p if p.startswith(key) else f"{key}: {p}" for p in error.problems]
        return None


def build_registered(registry: Registry, spec: Any, key: str, name_key: str, problems: list[str],
                     config_of: Callable[[type], type] = lambda registered: registered) -> Any:
    """The config of a `{<name_key>: <registered name>, ...options}` entry, typed by the registered config class
    (`config_of` maps a registered class to its config class, for registries of runnable classes).

    Returns None (with the problems recorded) when the entry is not such a mapping, names no registered
    class, or has bad options.
    """
    if not isinstance(spec, dict) or name_key not in spec:
        problems.append(f"{key}: expected a mapping with `{name_key}` (one of {', '.join(registry.names())})")
        return None
    try:
        chosen = registry.get(spec[name_key], f"{key}.{name_key}")
    except RecipeError as error:
        problems += error.problems
        return None
    return build(config_of(chosen), spec, key, problems)


def convert(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against type `hint`, converting nested dataclasses; record a problem on mismatch."""
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, problems)
    origin = typing.get_origin(hint)
    if origin in (list, tuple) and isinstance(value, list):
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        return [convert(item, item_hint, f"{key}.{i}", problems) for i, item in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        _, value_hint = typing.get_args(hint) or (Any, Any)
        return {k: convert(v, value_hint, f"{key}.{k}", problems) for k, v in value.items()}
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is not None and len(options) == 1 and dataclasses.is_dataclass(options[0]):
            return build(options[0], value, key, problems)  # name the nested key, not the union
        for option in typing.get_args(hint):
            trial: list[str] = []
            converted = convert(value, option, key, trial)
            if not trial:
                return converted
        problems.append(mismatch(key, hint, value))
        return None
    if matches(value, hint):
        return coerce(value, hint)
    problems.append(mismatch(key, hint, value))
    return None


def mismatch(key: str, hint: Any, value: Any) -> str:
    return f"{key}: expected {describe(hint)}, got {type_name(value)} {value!r}{yaml_bool_hint(value, hint)}"


def yaml_bool_hint(value: Any, hint: Any) -> str:
    """A hint when YAML 1.1 turned an unquoted `no`/`off`/`yes`/`on` into the boolean a string field did not want."""
    if not isinstance(value, bool) or not takes_string(hint):
        return ""
    return (f"; YAML reads an unquoted no/yes/off/on/false/true as a boolean: quote the word, e.g. "
            f"'{'no' if value is False else 'yes'}' (in YAML) or KEY=\"'no'\" (as an override)")


def takes_string(hint: Any) -> bool:
    """Whether `hint` accepts some string (str, a Literal of strings, a string enum, or a union holding one)."""
    if hint is str:
        return True
    if typing.get_origin(hint) is Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(hint))
    if typing.get_origin(hint) in (Union, types.UnionType):
        return any(takes_string(arg) for arg in typing.get_args(hint))
    return isinstance(hint, type) and issubclass(hint, enum.Enum) and any(isinstance(m.value, str) for m in hint)


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain (non-container, non-union) value fits `hint`; unknown exotic hints accept anything."""
    if hint is Any or hint is object:
        return True
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or parses_as_float(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint} or isinstance(value, hint)
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is list:
        return isinstance(value, list)
    return not isinstance(hint, type) or isinstance(value, hint)


def coerce(value: Any, hint: Any) -> Any:
    """YAML 1.1 reads `2e-5` as a string; a float field takes it as the number it spells."""
    if hint is float and isinstance(value, (str, int)):
        return float(value)
    return value


def parses_as_float(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", type(None): "null"}.get(type(value), type(value).__name__)


def field_names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)
