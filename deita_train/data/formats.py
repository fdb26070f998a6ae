"""Format adapters: one function per source format, raw record -> canonical fields.

Each adapter returns the canonical `messages` (and, for preference data, `prompt`/`chosen`/`rejected`
message lists) or raises `RecordError` saying what is wrong with the record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deita_train.data.conversation import Message, RecordError, check_messages

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "system": "system",
}  # fmt: skip
# Fields a format turns into `messages`; they are not kept as columns (every other field is).
STRUCTURE_FIELDS = {"conversations", "messages", "prompt", "completion", "chosen", "rejected", "system"}
CANONICAL_COLUMNS = ("id", "messages", "source_file", "source_row")  # every pool row has these


def original_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Fields kept beside `messages` (scores computed elsewhere, metadata); a source `id` becomes `source_id`."""
    kept = {k: v for k, v in record.items() if k not in STRUCTURE_FIELDS and k not in CANONICAL_COLUMNS}
    if "id" in record:
        kept["source_id"] = str(record["id"])
    return kept


def require_text(record: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    if name not in record:
        raise RecordError(f"missing field {name!r} (fields: {', '.join(sorted(record))})")
    value = record[name]
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordError(f"field {name!r} is empty")
    return value


def with_system(record: dict[str, Any], messages: list[Message]) -> list[Message]:
    """Prepend the record's top-level `system` prompt, when it has a non-empty one."""
    system = record.get("system")
    if system is None or system == "":
        return messages
    if not isinstance(system, str):
        raise RecordError(f"field 'system' must be a string, got {type(system).__name__}")
    if messages and messages[0]["role"] == "system":
        raise RecordError("both a `system` field and a system message")
    return [{"role": "system", "content": system}, *messages]


def alpaca(record: dict[str, Any]) -> dict[str, Any]:
    """`instruction`, optional `input`, `output` -> a user turn `instruction\\ninput` and the answer (may be empty)."""
    instruction = require_text(record, "instruction")
    extra = require_text(record, "input", allow_empty=True) if "input" in record else ""
    output = require_text(record, "output", allow_empty=True)
    user = f"{instruction}\n{extra}" if extra.strip() else instruction
    messages = with_system(record, [{"role": "user", "content": user}, {"role": "assistant", "content": output}])
    return {"messages": check_messages(messages)}


def sharegpt(record: dict[str, Any]) -> dict[str, Any]:
    """`conversations: [{from: human|gpt|system, value}]`."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list):
        raise RecordError("missing field 'conversations' (a list of {from, value})")
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(f"conversations[{i}] must have `from` and `value`, got {turn!r:.80}")
        if turn["from"] not in SHAREGPT_ROLES:
            known = ", ".join(SHAREGPT_ROLES)
            raise RecordError(f"conversations[{i}]: unknown speaker {turn['from']!r} (known: {known})")
        messages.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn["value"]})
    return {"messages": check_messages(with_system(record, messages))}


def messages_format(record: dict[str, Any]) -> dict[str, Any]:
    """`messages: [{role, content}]` (OpenAI / TRL conversational)."""
    if "messages" not in record:
        raise RecordError("missing field 'messages' (a list of {role, content})")
    return {"messages": check_messages(with_system(record, record["messages"]))}


def as_messages(value: Any, role: str, name: str) -> list[Message]:
    """A string (one message of `role`) or a message list, as a message list."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise RecordError(f"field {name!r} must be a string or a list of messages, got {type(value).__name__}")


def prompt_completion(record: dict[str, Any]) -> dict[str, Any]:
    """`prompt` and `completion`, each a string or a message list."""
    for name in ("prompt", "completion"):
        if name not in record:
            raise RecordError(f"missing field {name!r} (fields: {', '.join(sorted(record))})")
    prompt = as_messages(record["prompt"], "user", "prompt")
    completion = as_messages(record["completion"], "assistant", "completion")
    return {"messages": check_messages(with_system(record, prompt + completion))}


def preference(record: dict[str, Any]) -> dict[str, Any]:
    """`prompt`, `chosen`, `rejected` (strings or message lists) -> the pair, and `messages` = prompt + chosen."""
    for name in ("prompt", "chosen", "rejected"):
        if name not in record:
            raise RecordError(f"missing field {name!r} (fields: {', '.join(sorted(record))})")
    prompt = check_messages(with_system(record, as_messages(record["prompt"], "user", "prompt")), final_assistant=False)
    if prompt[-1]["role"] != "user":
        raise RecordError("the prompt must end with a user message")
    pair = {}
    for name in ("chosen", "rejected"):
        answer = as_messages(record[name], "assistant", name)
        full = check_messages(prompt + answer)
        pair[name] = full[len(prompt) :]
    return {"messages": prompt + pair["chosen"], "prompt": prompt, **pair}


ADAPTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "alpaca": alpaca,
    "sharegpt": sharegpt,
    "messages": messages_format,
    "prompt_completion": prompt_completion,
    "preference": preference,
}


def detect_format(record: dict[str, Any]) -> str:
    """The format whose fields the record has; an error names the keys it found."""
    keys = set(record)
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    raise RecordError(f"cannot detect the format from fields {sorted(keys)}; set the source's `format`")


def adapt(record: Any, format_name: str) -> tuple[str, dict[str, Any]]:
    """(format used, canonical fields) for one raw record."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, got {type(record).__name__}")
    used = detect_format(record) if format_name == "auto" else format_name
    return used, ADAPTERS[used](record)
