"""What a training feature needs before it may run, checked when the recipe loads and again before training.

Each check returns problems as `key: what is wrong; what to do` strings, so the recipe loader can report
them all at once and the trainers can refuse with the same words.
"""

from __future__ import annotations

import importlib.util
from typing import Any

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


def packing_problems(section: str, args: dict[str, Any], attn_implementation: str | None) -> list[str]:
    """Packing and padding-free batches put several samples in one row. FlashAttention's varlen kernels keep them
    apart natively; any other kernel depends on transformers rebuilding a dense block-diagonal mask from
    `position_ids` over the whole packed batch (and on nothing passing an attention mask instead), which gives up
    what packing is for and cross-contaminates samples when that path is not taken. So refuse."""
    asked = [name for name in ("packing", "padding_free") if args.get(name)]
    if not asked or attn_implementation in FLASH_ATTENTION:
        return []
    current = attn_implementation or "the default (sdpa)"
    return [
        f"{section}.{asked[0]}: needs a FlashAttention implementation, but model.attn_implementation is {current}; "
        f"without varlen kernels the samples of a packed row are kept apart only by a dense mask over the whole "
        f"packed batch, or not at all. Set model.attn_implementation: flash_attention_2 (pip install flash-attn) "
        f"or flash_attention_3, or remove {section}.{asked[0]}"
    ]


def liger_problems(section: str, args: dict[str, Any]) -> list[str]:
    """Liger kernels are Triton kernels: they need the `liger-kernel` package (and a GPU to run)."""
    if not args.get("use_liger_kernel") or importlib.util.find_spec("liger_kernel") is not None:
        return []
    return [f"{section}.use_liger_kernel: the liger-kernel package is not installed: pip install liger-kernel, "
            f"or remove {section}.use_liger_kernel"]


def eval_problems(section: str, args: dict[str, Any], has_eval_data: bool) -> list[str]:
    """Evaluation during training needs held-out data: `eval_dataset` sources or an `eval_split` of the train rows."""
    strategy = str(args.get("eval_strategy", "no")).split(".")[-1].lower()
    if strategy == "no" or has_eval_data:
        return []
    return [f"{section}.eval_strategy: is {strategy}, but the {section} stage has no eval data: set "
            f"{section}.eval_dataset (sources) or {section}.eval_split (a fraction or a row count)"]


# DPO loss types whose loss is not a sum of per-pair terms, so a pair's weight has nothing of its own to scale.
UNPAIRED_DPO_LOSSES = {"aot": "sorts log-ratios across the batch", "aot_unpaired": "sorts log-ratios across the batch",
                       "sft": "one token mean over the batch"}


def sample_weight_problems(section: str, args: dict[str, Any]) -> list[str]:
    """`sample_weight` scales the per-token log-probabilities of TRL's default losses (training/weights.py): what
    bypasses them, or drops the weight column, cannot be weighted."""
    key = f"{section}.sample_weight"
    if section == "sft":
        problems = [f"{key}: not with sft.packing: TRL packs only input_ids and labels, so rows lose their weight; "
                    "remove one"] if args.get("packing") else []
        if args.get("loss_type", "nll") != "nll":
            problems.append(f"{key}: weights TRL's nll loss, not loss_type {args['loss_type']}; remove one")
        if args.get("label_smoothing_factor", 0) > 0:
            problems.append(f"{key}: not with label_smoothing_factor (TRL computes that loss from the full logits, "
                            "not the per-token log-probabilities it weights); remove one")
        return problems
    loss_types = args.get("loss_type", ["sigmoid"])
    return [f"{key}: weights each pair's loss, but loss_type {name} is no per-pair loss ({why}); use a per-pair "
            "loss (sigmoid, TRL's default) or remove dpo.sample_weight"
            for name in ([loss_types] if isinstance(loss_types, str) else loss_types)
            if (why := UNPAIRED_DPO_LOSSES.get(name))]
