"""`deita-train preview RECIPE`: the first training rows as the trainer sees them, what is trained on marked
(as axolotl's preprocess debug view shows it).

SFT: each row's `messages` through the chat template training uses, with the assistant mask TRL builds its labels
from (`assistant_only_loss`: the template's `{% generation %}` spans; TRL's training template when the tokenizer's
own has no markers), cut to `max_length` as TRL cuts it. DPO: the prompt (context) and the chosen and rejected
completions (trained), split where TRL's DPOTrainer splits them. Only the tokenizer loads, never model weights.

Rows: `selected/` when the recipe selects and it exists, else the pool's sources (DPO: `dpo.dataset`); the first N,
before any `eval_split` hold-out and TRL's shuffling. DPO's tokenizer is the recipe model's (or `dpo.model`'s): the
sft output saves that tokenizer with the same template.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from typing import Any

from datasets import Dataset, load_from_disk
from transformers import PreTrainedTokenizerBase
from trl import DPOConfig, SFTConfig
from trl.chat_template_utils import get_training_chat_template, has_generation_markers
from trl.data_utils import common_prefix_length

from deita_train.data.chat_templates import apply_chat_template
from deita_train.data.sources import load_sources
from deita_train.recipe.errors import RecipeError
from deita_train.recipe.schema import Recipe
from deita_train.training.config import ModelConfig
from deita_train.training.dpo import DPO_DEFAULTS
from deita_train.training.models import load_tokenizer
from deita_train.training.sft import SFT_DEFAULTS

TRAINED, CONTEXT, RESET = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"


@dataclasses.dataclass
class Marked:
    """A token sequence as the trainer sees it: which tokens the loss is on, and how many `max_length` cut off."""

    ids: list[int]
    trained: list[bool]
    cut: int = 0


def preview_command(recipe: Recipe, stage: str, rows: int) -> int:
    """Print the first `rows` rows of `stage` (`sft` or `dpo`); exit code 0."""
    if getattr(recipe, stage) is None:
        raise RecipeError([f"{stage}: the recipe has no {stage} section, so nothing trains on {stage} rows"])
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    legend = ("green: trained on; dim: context, not trained on" if color
              else "[[...]]: trained on; the rest: context, not trained on")
    if stage == "sft":
        show_sft(recipe, rows, color, legend)
    else:
        show_dpo(recipe, rows, color, legend)
    return 0


def show_sft(recipe: Recipe, rows: int, color: bool, legend: str) -> None:
    args = trainer_args(SFTConfig, SFT_DEFAULTS, recipe.sft.args)
    model = recipe.model  # validation requires it with an sft stage
    tokenizer = apply_chat_template(load_tokenizer(model.name_or_path, model.trust_remote_code), model.chat_template)
    data, where = sft_rows(recipe)
    max_length = None if args["packing"] else args["max_length"]
    cutting = "packing (rows are not cut one by one)" if args["packing"] else (
        f"max_length: {max_length} ({args['truncation_mode']})")
    print(f"sft: the first {min(rows, len(data))} of {len(data)} rows of {where}")
    print(f"tokenizer {model.name_or_path}, chat template {model.chat_template}; "
          f"assistant_only_loss: {args['assistant_only_loss']}, {cutting}")
    print(legend)
    for row in data.select(range(min(rows, len(data)))):
        marked = sft_marked(tokenizer, row["messages"], args["assistant_only_loss"], max_length,
                            args["truncation_mode"])
        print(f"\n--- row id {row['id']} ---\n{render(tokenizer, marked, color)}")
        print(f"trained tokens: {count(marked)}")


def show_dpo(recipe: Recipe, rows: int, color: bool, legend: str) -> None:
    stage = recipe.dpo
    args = trainer_args(DPOConfig, DPO_DEFAULTS, stage.args)
    model = dpo_model(recipe)
    tokenizer = load_tokenizer(model.name_or_path, model.trust_remote_code)
    if not tokenizer.chat_template or model.chat_template != "model":  # as training/dpo.py sets it
        tokenizer = apply_chat_template(tokenizer, model.chat_template)
    pairs, _ = load_sources(stage.dataset, recipe.seed, preference=True)
    print(f"dpo: the first {min(rows, len(pairs))} of {len(pairs)} pairs of dpo.dataset")
    print(f"tokenizer {model.name_or_path}, chat template {model.chat_template}; "
          f"max_length: {args['max_length']} ({args['truncation_mode']})")
    print(legend)
    for pair in pairs.select(range(min(rows, len(pairs)))):
        chosen, rejected = dpo_marked(tokenizer, pair, args["max_length"], args["truncation_mode"])
        print(f"\n--- pair id {pair['id']} ---\nprompt:\n{render(tokenizer, split(chosen)[0], color)}")
        for label, marked in (("chosen", chosen), ("rejected", rejected)):
            print(f"{label}:\n{render(tokenizer, split(marked)[1], color)}")
        print(f"trained tokens: chosen {count(chosen)}; rejected {count(rejected)}")


def split(marked: Marked) -> tuple[Marked, Marked]:
    """A DPO sequence's prompt (the tokens before the first trained one) and completion."""
    start = marked.trained.index(True) if any(marked.trained) else len(marked.ids)
    return Marked(marked.ids[:start], marked.trained[:start]), Marked(marked.ids[start:], marked.trained[start:])


def dpo_model(recipe: Recipe) -> ModelConfig:
    """The model whose tokenizer the dpo stage uses: `dpo.model` (with its own `trust_remote_code`), else the
    recipe's model (the sft output saves its tokenizer with the same chat template)."""
    stage = recipe.dpo
    if stage.model is None:
        return recipe.model
    return dataclasses.replace(recipe.model or ModelConfig(name_or_path=stage.model), name_or_path=stage.model,
                               trust_remote_code=stage.trust_remote_code)


def trainer_args(config_class: type, defaults: dict[str, Any], stage_args: dict[str, Any]) -> dict[str, Any]:
    """The trainer's options as training resolves them: TRL's defaults, then deita-train's, then the recipe's."""
    trl = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    return trl | defaults | stage_args


def sft_rows(recipe: Recipe) -> tuple[Dataset, str]:
    """What the sft stage would read: `selected/` when the recipe selects and it exists, else the pool's sources."""
    selected = recipe.output_dir / "selected"
    if recipe.select is not None and selected.is_dir():
        return load_from_disk(str(selected)), str(selected)
    pool, _ = load_sources(recipe.pool, recipe.seed)
    return pool, "the pool's sources" + (f" ({selected} does not exist yet)" if recipe.select is not None else "")


def sft_marked(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], assistant_only_loss: bool,
               max_length: int | None, truncation_mode: str) -> Marked:
    """The conversation's tokens and TRL's label mask: the assistant mask of the chat template (TRL's training
    template when the tokenizer's own has no `{% generation %}` markers), or every token without assistant-only loss."""
    swap = assistant_only_loss and not has_generation_markers(tokenizer.chat_template)
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_only_loss,
        chat_template=get_training_chat_template(tokenizer) if swap else None,
    )
    ids = encoded["input_ids"]
    trained = [bool(bit) for bit in encoded["assistant_masks"]] if assistant_only_loss else [True] * len(ids)
    return truncate(ids, trained, max_length, truncation_mode)


def dpo_marked(tokenizer: PreTrainedTokenizerBase, pair: dict[str, Any], max_length: int | None,
               truncation_mode: str) -> tuple[Marked, Marked]:
    """Prompt + chosen and prompt + rejected, the completions trained, split as TRL's DPOTrainer splits them: the
    prompt ends where its rendering (with the generation prompt) and both full renderings stop agreeing."""
    prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    full = [tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=True)["input_ids"]
            for side in ("chosen", "rejected")]
    prompt_length = min(common_prefix_length(prompt, ids) for ids in full)
    return tuple(truncate(ids, [False] * prompt_length + [True] * (len(ids) - prompt_length), max_length,
                          truncation_mode) for ids in full)


def truncate(ids: list[int], trained: list[bool], max_length: int | None, truncation_mode: str) -> Marked:
    """`max_length` tokens, kept from the start (`keep_start`) or the end (`keep_end`), as TRL keeps them."""
    if max_length is None or len(ids) <= max_length:
        return Marked(ids, trained)
    kept = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
    return Marked(ids[kept], trained[kept], cut=len(ids) - max_length)


def render(tokenizer: PreTrainedTokenizerBase, marked: Marked, color: bool) -> str:
    """The decoded text, trained spans green and the rest dim on a terminal, trained spans in `[[...]]` otherwise."""
    spans = []
    for trained, group in itertools.groupby(zip(marked.ids, marked.trained, strict=True), key=lambda pair: pair[1]):
        text = tokenizer.decode([token for token, _ in group], clean_up_tokenization_spaces=False)
        if color:
            spans.append(f"{TRAINED if trained else CONTEXT}{text}{RESET}")
        else:
            spans.append(f"[[{text}]]" if trained else text)
    return "".join(spans)


def count(marked: Marked) -> str:
    """`X of Y`, with what `max_length` cut and, when nothing is trained, what TRL does with the row."""
    text = f"{sum(marked.trained)} of {len(marked.ids)}"
    if marked.cut:
        text += f" ({marked.cut} more cut by max_length)"
    if not any(marked.trained):
        text += (" (no trained token left: TRL drops this row)" if marked.cut
                 else " (the template marks no assistant token: TRL refuses this row)")
    return text
