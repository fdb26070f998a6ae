"""Magpie's pre-query templates and end-of-turn stops (docs/methods.md, Magpie synthesis).

A pre-query template is an aligned model's chat prefix for a user turn with no content: sampled from, the model
writes a user's instruction. It is derived from the tokenizer's chat template (a user turn whose content is a
sentinel, cut at the sentinel), with `PRE_QUERY_TEMPLATES`, as Magpie publishes them
(magpie-align/magpie `configs/model_configs.json`), as the fallback.

What a model's own template renders can differ from the table: Gemma-2's template renders `<bos><start_of_turn>user\\n`
(the table has a second `\\n`), Phi-3's `<s><|user|>\\n` and Mistral's `<s>[INST] ` (no space after `<s>`), and
templates that add a default system prompt keep it (Qwen2, Qwen2.5; Llama-3.1's template adds a system turn with
its knowledge-cutoff date). Name a table entry in `synth.pre_query_template` to sample exactly as Magpie did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from jinja2 import TemplateError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PRE_QUERY_TEMPLATES: dict[str, str] = {
    # Llama-3, 3.1, 3.3 Instruct.
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    # Qwen2 (and Qwen1.5) Instruct, as Magpie samples it: no system turn.
    "qwen2": "<|im_start|>user\n",
    # Qwen2 Instruct as its own template renders a lone user turn: with its default system prompt.
    "qwen2_system": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    # Qwen2.5 Instruct: needs its default system prompt.
    "qwen2.5": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n",
    "phi3": "<s> <|user|>\n",
    "gemma2": "<bos><start_of_turn>user\n\n",
    "mistral": "<s> [INST] ",
    "llama2": "<s> [INST] ",
    # Vicuna v1.5 (FastChat `vicuna_v1.1`), with its system prompt.
    "vicuna": "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.\n\nUSER: ",
}

# Special tokens that end a turn, per family; `end_of_turn_stops` keeps those the tokenizer has as added (special)
# tokens: an ordinary BPE token spelled the same (Qwen2's vocabulary has a plain `</s>`) is text, not a stop.
END_OF_TURN_STOPS: dict[str, tuple[str, ...]] = {
    "llama3": ("<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"),
    "qwen": ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    "gemma": ("<eos>", "<end_of_turn>", "<start_of_turn>"),
    "phi3": ("<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"),
    "llama2": ("</s>",),  # also Mistral and Vicuna: the SentencePiece EOS
}

# Table entry of a model without a chat template, by its name (the last part of a hub id or path); first match wins.
MODEL_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"qwen-?2\.5", "qwen2.5"),
    (r"qwen-?(2|1\.5)(?![.\d])", "qwen2"),
    (r"llama-?3(?!\d)", "llama3"),
    (r"llama-?2(?!\d)", "llama2"),
    (r"phi-?3(?!\d)", "phi3"),
    (r"gemma-?2(?!\d)", "gemma2"),
    (r"mistral|mixtral", "mistral"),
    (r"vicuna", "vicuna"),
)

# Content no template alters (no whitespace for `| trim` to remove, nothing to escape) and no text contains.
SENTINEL = "Zq7XvKp9Wm3Rt"
FIX = f"set synth.pre_query_template to a table name ({', '.join(PRE_QUERY_TEMPLATES)}) or the template text"
MULTI_TURN_FIX = "multi-turn synthesis needs a chat template that renders a second user turn; set synth.turns: 1"


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], what: str, fix: str) -> str:
    if not tokenizer.chat_template:
        raise ValueError(f"{tokenizer.name_or_path}: the tokenizer has no chat template to derive {what} from; {fix}")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    except TemplateError as error:
        raise ValueError(f"{tokenizer.name_or_path}: its chat template refused {what}: {error}; {fix}") from error


def _index(text: str, sentinel: str, tokenizer: PreTrainedTokenizerBase, what: str, fix: str) -> int:
    if sentinel not in text:
        raise ValueError(f"{tokenizer.name_or_path}: its chat template does not render the message content, so "
                         f"{what} cannot be cut from it (rendered: {text!r}); {fix}")
    return text.index(sentinel)


def derive_pre_query_template(tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None) -> str:
    """The chat template's text before a user turn's content: a system turn (`system_prompt`, else the template's
    default one if it adds one) then the user header, BOS included when the template writes it."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    what = "a pre-query template"
    text = _render(tokenizer, [*messages, {"role": "user", "content": SENTINEL}], what, FIX)
    return text[: _index(text, SENTINEL, tokenizer, what, FIX)]


def multi_turn_user_prefix(tokenizer: PreTrainedTokenizerBase) -> str:
    """The text between an assistant turn's content and the next user turn's content: the assistant's end-of-turn
    marker, any separator, and the user header (Llama-3: `<|eot_id|><|start_header_id|>user<|end_header_id|>\\n\\n`,
    ChatML: `<|im_end|>\\n<|im_start|>user\\n`).

    Append it to the prompt that produced the answer followed by the answer's text (its end-of-turn stop removed, as
    every backend returns it): the result is the pre-query template of the next user turn.
    """
    first, answer, second = (f"{SENTINEL}{tag}" for tag in "ABC")
    messages = [{"role": "user", "content": first}, {"role": "assistant", "content": answer},
                {"role": "user", "content": second}]
    what = "the prefix of a second user turn"
    text = _render(tokenizer, messages, what, MULTI_TURN_FIX)
    start = _index(text, answer, tokenizer, what, MULTI_TURN_FIX) + len(answer)
    return text[start : _index(text, second, tokenizer, what, MULTI_TURN_FIX)]


def table_name_for(model_name: str) -> str | None:
    """The `PRE_QUERY_TEMPLATES` entry for a model name (`Meta-Llama-3-8B-Instruct` -> `llama3`), or None."""
    name = PurePosixPath(model_name.rstrip("/")).name.lower()
    return next((entry for pattern, entry in MODEL_NAME_PATTERNS if re.search(pattern, name)), None)


def resolve_pre_query_template(
    option: str, tokenizer: PreTrainedTokenizerBase, model_name: str, system_prompt: str | None
) -> tuple[str, str]:
    """`(template, source)` for `synth.pre_query_template`: `auto` derives it from the chat template (`derived`),
    or, for a tokenizer without one, takes the table entry matching `model_name` (`table:<name>`); a table name
    gives its entry (`table:<name>`); anything else is the template text itself (`explicit`).

    A `system_prompt` is rendered into derived templates only; with a table or explicit template it is an error
    (write the system turn into the template text instead).
    """
    if option == "auto" and tokenizer.chat_template:
        return derive_pre_query_template(tokenizer, system_prompt), "derived"
    if option == "auto":
        name = table_name_for(model_name)
        if name is None:
            raise ValueError(f"synth.pre_query_template: {model_name} has no chat template and its name matches no "
                             f"table entry; {FIX}")
    else:
        name = option if option in PRE_QUERY_TEMPLATES else None
    if system_prompt is not None:
        source = f"the table entry {name!r}" if name else "an explicit template"
        raise ValueError(f"synth.system_prompt: only rendered into a template derived from the chat template, but "
                         f"synth.pre_query_template gives {source}; write the system turn into the template text")
    if name is None:
        return option, "explicit"
    return PRE_QUERY_TEMPLATES[name], f"table:{name}"


def end_of_turn_stops(tokenizer: PreTrainedTokenizerBase) -> tuple[list[str], list[int]]:
    """The model's end-of-turn strings and their token ids: its EOS token, the EOS ids of the `generation_config.json`
    beside the tokenizer (when there is one), and the `END_OF_TURN_STOPS` tokens among its added tokens."""
    from transformers.utils import cached_file

    added = tokenizer.get_added_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    path = cached_file(tokenizer.name_or_path, "generation_config.json", _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    if path is not None:
        eos = json.loads(Path(path).read_text(encoding="utf-8")).get("eos_token_id")
        ids += [eos] if isinstance(eos, int) else list(eos or [])
    ids += [added[token] for stops in END_OF_TURN_STOPS.values() for token in stops if token in added]
    ids = list(dict.fromkeys(ids))
    return tokenizer.convert_ids_to_tokens(ids), ids
