"""The evaluation prompts `select.decontaminate` checks the pool against: a named set shipped with the package, or a
prompt file. Light (no `datasets`, no torch): `deita-train validate` reads prompt files through it.

Named sets: `mt_bench` (the 80 MT-Bench questions, both turns: 160 prompts; `deita_train/evaluation/data/`) and
`alpaca_eval` (the 805 AlpacaEval instructions; `deita_train/selection/data/`, whose README says where they come
from). A prompt file is a `.jsonl` (one JSON object per line) or `.json` (a list of objects) file; each object's
prompt is the first of `prompt`, `instruction`, `question` (a string) or `turns` (a list of strings, each a prompt)
that it has.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from deita_train.recipe.errors import RecipeError
from deita_train.registry import did_you_mean

NAMED_SETS = {  # name -> (package, file inside it)
    "alpaca_eval": ("deita_train.selection", "data/alpaca_eval_prompts.jsonl"),
    "mt_bench": ("deita_train.evaluation", "data/mt_bench_questions.jsonl"),
}
PROMPT_FIELDS = ("prompt", "instruction", "question", "turns")
SUFFIXES = (".jsonl", ".json")


def is_prompt_file(entry: str) -> bool:
    """Whether a `sets` entry names a file (a path with a separator or a .jsonl/.json suffix) rather than a set."""
    return "/" in entry or entry.endswith(SUFFIXES)


def eval_prompts(entry: str, key: str) -> list[str]:
    """The prompts of `entry` (a named set or a prompt file), in file order; a RecipeError naming `key` when the set
    is unknown, the file is missing or not a prompt file, or a record has no prompt."""
    text, where = prompt_text(entry, key), f"{key} ({entry})"
    if not is_prompt_file(entry) or entry.endswith(".jsonl"):
        return records_prompts(jsonl_records(text, where), f"{where} line")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecipeError([f"{where}: not valid JSON: {error}"]) from error
    if not isinstance(records, list):
        raise RecipeError([f"{where}: expected a JSON list of objects, got a {type(records).__name__}"])
    return records_prompts(enumerate(records, 1), f"{where} item")


def prompt_text(entry: str, key: str) -> str:
    """The text of a named set's file (JSONL) or of a prompt file."""
    if not is_prompt_file(entry):
        if entry not in NAMED_SETS:
            raise RecipeError([f"{key}: unknown eval set {entry!r}{did_you_mean(entry, NAMED_SETS)} (or give a .jsonl "
                               "or .json prompt file)"])
        package, name = NAMED_SETS[entry]
        return resources.files(package).joinpath(name).read_text("utf-8")
    path = Path(entry).expanduser()
    if not entry.endswith(SUFFIXES):
        raise RecipeError([f"{key}: {entry!r} is not a prompt file: give a .jsonl or .json file"])
    if not path.is_file():
        raise RecipeError([f"{key}: file not found: {entry} (relative paths are read from the working directory)"])
    return path.read_text("utf-8")


def jsonl_records(text: str, where: str) -> list[tuple[int, Any]]:
    """`(line number, decoded object)` for each non-blank line of `text`."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise RecipeError([f"{where} line {number}: not valid JSON: {error}"]) from error
    return records


def records_prompts(records: Iterable[tuple[int, Any]], where: str) -> list[str]:
    """Each record's prompt(s): its first prompt field (`PROMPT_FIELDS`); `turns` gives one prompt per turn. `where`
    names a record with its number appended (`... line 3`)."""
    prompts: list[str] = []
    for number, record in records:
        field = next((name for name in PROMPT_FIELDS if isinstance(record, dict) and name in record), None)
        value = None if field is None else record[field]
        if field == "turns" and isinstance(value, list) and all(isinstance(turn, str) for turn in value):
            prompts += value
        elif field != "turns" and isinstance(value, str):
            prompts.append(value)
        else:
            found = f"{field!r} is {str(value)[:60]!r}" if field else f"got {str(record)[:80]!r}"
            raise RecipeError([f"{where} {number}: no prompt: expected a string in one of prompt, instruction, "
                               f"question, or a list of strings in turns; {found}"])
    return prompts
