"""Canonical conversations: `[{"role": system|user|assistant, "content": str}]` and their turns.

docs/methods.md: a turn is a user message and the assistant message answering it.
"""

from __future__ import annotations

from dataclasses import dataclass

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record that cannot become a canonical conversation; the message says what is wrong."""


def check_messages(messages: list[Message], *, final_assistant: bool = True) -> list[Message]:
    """Validate roles and contents; return `messages` with only `role` and `content` kept.

    Rules: an optional system message first, then user and assistant alternating, starting with
    user and (when `final_assistant`) ending with assistant; every content a string, non-empty except an
    assistant's (an empty answer is valid data, which the scorers that read answers report as unscorable).
    """
    if not isinstance(messages, list) or not messages:
        raise RecordError("no messages")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RecordError(f"message {i} must have `role` and `content`, got {message!r:.80}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise RecordError(f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise RecordError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
        if not content.strip() and role != "assistant":
            raise RecordError(f"message {i} ({role}): empty content")
        clean.append({"role": role, "content": content})
    body = clean[1:] if clean[0]["role"] == "system" else clean
    if not body:
        raise RecordError("only a system message")
    for i, message in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            position = i + len(clean) - len(body)
            raise RecordError(
                f"message {position}: role {message['role']!r} where {expected!r} belongs "
                "(roles alternate user/assistant, after an optional system message)"
            )
    if final_assistant and body[-1]["role"] != "assistant":
        raise RecordError("the last message must be the assistant's")
    return clean


@dataclass(frozen=True)
class Turn:
    """One user message and its answer, with what came before it."""

    system: str | None
    history: list[Message]  # earlier messages, system excluded
    user: str
    assistant: str


def has_empty_answer(messages: list[Message]) -> bool:
    """Whether an assistant message is empty or only whitespace: scorers that read answers cannot score it."""
    return any(m["role"] == "assistant" and not m["content"].strip() for m in messages)


def turns(messages: list[Message]) -> list[Turn]:
    """The turns of a canonical conversation, in order."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    body = messages[1:] if system is not None else messages
    return [
        Turn(system=system, history=body[:i], user=body[i]["content"], assistant=body[i + 1]["content"])
        for i in range(0, len(body) - 1, 2)
    ]
