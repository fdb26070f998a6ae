"""Training throughput: TRL SFT (packing off/on, per attention kernel) and DPO on a randomly initialised Llama.

    PYTHONPATH=. python bench/training.py                                     # CPU: --size tiny, short run
    PYTHONPATH=. python bench/training.py --size 1b --max-length 2048 --steps 30 --json train.json   # H200

Models are `LlamaForCausalLM` built from a config with tied embeddings: `1b` is the Llama-3.2-1B shape
(hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192; 1.24B parameters with the Llama-3 vocabulary),
`tiny` runs on two CPU cores. Tokenizer (`--tokenizer`): for `1b` the real Llama-3 one from
`shared/data/tokenizers/llama3` with the project's `llama3` chat template; for `tiny` the project's tiny-model BPE
(2,048 tokens, trained on real Alpaca text) with ChatML, since a 128,256-row LM head would make a tiny model's CPU
step mostly LM head (pass the Llama-3 folder to use it anyway). Data: the real rows in
`recipes/quickstart/data` (400 Alpaca records as user/assistant messages; 300 preference pairs), repeated to fill
`--steps`. Trainers: TRL's `SFTTrainer` (the project's `SFT_DEFAULTS`: loss on assistant tokens only; packing is
TRL's `bfd`, which is padding-free) and `DPOTrainer` (a frozen copy of the initial model as the reference).
Before a packing run, the model checks that a conversation packed after another (TRL's padding-free collator)
gets the logits it gets alone; the control is the same row without position_ids (one causal sequence).

Model FLOPs, counted per conversation of n real tokens (PaLM appendix B with the attention span of each token
being its own conversation, as padding and packing do not change the model's work):
    SFT: 3 * (2*N*n + 4*L*H*n^2) = 6*N*n + 12*L*H*n^2      (forward + backward)
    DPO: 4 * (2*N*n + 4*L*H*n^2) = 8*N*n + 16*L*H*n^2      (policy forward + backward, reference forward)
N = every parameter that multiplies activations (all but the input embedding; the tied LM head counts once),
L = layers, H = hidden size. MFU = model FLOPs / time / peak; the peak is `--peak-tflops` (989 = H100/H200 bf16
dense) on CUDA, and on CPU a measured 2048^3 fp32 matmul unless `--peak-tflops` is given. Tokens/s counts real
(non-pad) tokens, for DPO those of the chosen and rejected sequences (prompt included in each) once each. Steps
after `--warmup-steps` are timed. Peak memory: `torch.cuda.max_memory_allocated`, or on CPU the process's
peak RSS (VmHWM, reset before each run).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import datasets
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from bench.selection import peak_rss_gib, reset_peak
from deita_train.data.chat_templates import TEMPLATE_NAMES, apply_chat_template
from deita_train.data.formats import alpaca, preference
from deita_train.training.dpo import DPO_DEFAULTS
from deita_train.training.sft import SFT_DEFAULTS
from deita_train.training.tiny_model import build_tokenizer

REPO = Path(__file__).resolve().parents[1]
LLAMA3 = REPO.parent / "shared" / "data" / "tokenizers" / "llama3"
SIZES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8},
    "tiny": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8,
             "num_key_value_heads": 4},
}
FLASH = {"flash_attention_2": is_flash_attn_2_available, "flash_attention_3": is_flash_attn_3_available}


def load_tokenizer(name: str, template: str) -> tuple[PreTrainedTokenizerBase, str]:
    """`tiny`: the project's tiny-model BPE with ChatML; otherwise the tokenizer folder `name` with `template`."""
    if name == "tiny":
        return apply_chat_template(build_tokenizer(2048), "chatml"), "deita-train tiny-model BPE (2,048), chatml"
    if not Path(name).is_dir():
        raise SystemExit(f"--tokenizer: {name} is not a folder; give a tokenizer folder (e.g. shared/data/tokenizers/"
                         "llama3) or `tiny` for the project's tiny-model tokenizer")
    return apply_chat_template(AutoTokenizer.from_pretrained(name), template), f"{name}, {template}"


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (REPO / "recipes" / "quickstart" / "data" / name).open()]


def repeated(rows: list[dict], tokens: list[int], needed: int) -> Dataset:
    """`rows` repeated until their tokens cover `needed` (plus one copy of slack for bin-packing waste)."""
    return Dataset.from_list(rows * (math.ceil(needed / sum(tokens)) + 1))


def build_model(
    size: str, tokenizer: PreTrainedTokenizerBase, attention: str, dtype: torch.dtype, device: str
) -> PreTrainedModel:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), **SIZES[size], tie_word_embeddings=True,
                         max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=dtype)


def matmul_params(model: PreTrainedModel) -> int:
    """N: all parameters but the input embedding; a tied LM head counts once, as the matmul it is."""
    total = sum(p.numel() for p in model.parameters())  # tied weights appear once here
    return total - model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()


def cpu_peak_flops() -> float:
    """FLOP/s of a 2048^3 fp32 matmul on this CPU: the CPU 'peak' that MFU is relative to."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    return 10 * 2 * 2048**3 / (time.perf_counter() - start)


class StepClock(TrainerCallback):
    """Wall time at the end of every optimizer step (after a device sync)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


class ConversationLengths:
    """Forward pre-hook on the policy: the real lengths of the conversations in each training forward, in order."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.batches: list[torch.Tensor] = []
        model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs) -> None:
        if module.training:  # padding-free batches carry sequence boundaries, padded ones a mask
            lengths = kwargs["cu_seq_lens_q"].diff() if "cu_seq_lens_q" in kwargs else kwargs["attention_mask"].sum(-1)
            self.batches.append(lengths.detach())


def packed_isolation(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict]
) -> tuple[float, float]:
    """Max |logit difference| of a conversation packed after another (TRL's padding-free collator) vs alone, and
    the same for a control forward without position_ids (one causal row: contaminated by construction)."""
    a, b = (tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)
            ["input_ids"][:96] for r in rows[:2])
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(
        [{"input_ids": a}, {"input_ids": b}])
    batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([b], device=model.device), use_cache=False).logits[0].float()
        packed = model(**batch, use_cache=False).logits[0, len(a):].float()
        control = model(input_ids=batch["input_ids"], use_cache=False).logits[0, len(a):].float()
    model.train()
    return (packed - alone).abs().max().item(), (control - alone).abs().max().item()


def run(kind: str, attention: str, packing: bool, args: argparse.Namespace,
        tokenizer: PreTrainedTokenizerBase, data: Dataset) -> dict:
    """Train `args.steps` steps of one configuration; return its figures."""
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = build_model(args.size, tokenizer, attention, dtype, args.device)
    isolation = packed_isolation(model, tokenizer, data.select(range(2)).to_list()) if packing else None
    common = {"output_dir": tempfile.mkdtemp(prefix="bench-train-"), "max_steps": args.steps, "seed": args.seed,
              "per_device_train_batch_size": args.batch_size, "max_length": args.max_length, "bf16": args.bf16,
              "activation_checkpointing": args.gradient_checkpointing, "save_strategy": "no",
              "logging_strategy": "no", "disable_tqdm": True, "dataloader_drop_last": True}
    clock = StepClock()
    if kind == "sft":
        config = SFTConfig(**SFT_DEFAULTS, **common, packing=packing, packing_strategy="bfd")
        lengths = ConversationLengths(model)
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                             callbacks=[clock])
    else:
        reference = copy.deepcopy(model).eval()  # before the hook, so the reference forwards are not counted
        lengths = ConversationLengths(model)
        trainer = DPOTrainer(model=model, ref_model=reference, args=DPOConfig(**DPO_DEFAULTS, **common),
                             train_dataset=data, processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    timed = torch.cat(lengths.batches[args.warmup_steps : args.steps]).double().cpu()
    seconds = clock.ends[-1] - clock.ends[args.warmup_steps - 1]
    passes = 3 if kind == "sft" else 4
    flops = passes * (2 * args.n_matmul * timed.sum() + 4 * args.layers * args.hidden * (timed**2).sum()).item()
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else peak_rss_gib()
    del trainer, model
    return {"run": kind, "attention": attention, "packing": packing, "steps_timed": args.steps - args.warmup_steps,
            "tokens": int(timed.sum()), "seconds": seconds, "tokens_per_s": timed.sum().item() / seconds,
            "model_tflops": flops / seconds / 1e12, "mfu": flops / seconds / args.peak_flops, "peak_gib": peak,
            "packed_diff": isolation[0] if isolation else None, "control_diff": isolation[1] if isolation else None}


def isolation_cell(result: dict) -> str:
    """Whether a packed conversation's logits equal its logits alone (measured by `packed_isolation`)."""
    if not result["packing"]:
        return "n/a (padded)"
    verdict = "yes" if result["packed_diff"] < 0.1 * result["control_diff"] else "NO: cross-contaminated"
    return f"{verdict} (max diff {result['packed_diff']:.1e}; one causal row: {result['control_diff']:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--size", choices=sorted(SIZES), default="1b" if cuda else "tiny")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per sequence (2048 for 1b, 256 tiny)")
    parser.add_argument("--batch-size", type=int, default=8 if cuda else 4, help="rows (SFT) or pairs (DPO) per step")
    parser.add_argument("--steps", type=int, default=30 if cuda else 8, help="optimizer steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=5 if cuda else 2, help="untimed steps at the start")
    parser.add_argument("--tokenizer", default=None, help=f"a tokenizer folder or `tiny` (default: {LLAMA3} for "
                        "1b, tiny for tiny: the 128,256-token Llama-3 LM head dominates a tiny model's step on a CPU)")
    parser.add_argument("--chat-template", choices=TEMPLATE_NAMES, default="llama3", help="for a tokenizer folder")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=cuda, help="bf16 weights + autocast")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--peak-tflops", type=float, default=989.0 if cuda else None,
                        help="peak FLOP/s for MFU (989: H100/H200 bf16 dense); on CPU default: measured matmul")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.max_length = args.max_length or (2048 if args.size == "1b" else 256)
    if not 1 <= args.warmup_steps < args.steps:
        parser.error(f"--warmup-steps must be in [1, --steps); got {args.warmup_steps} with --steps {args.steps}")
    if args.bf16 and not cuda:
        parser.error("--bf16 needs CUDA here; run the CPU configuration in fp32 (--no-bf16)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    datasets.disable_progress_bars()
    args.device = "cuda" if cuda else "cpu"
    args.peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else cpu_peak_flops()
    args.tokenizer = args.tokenizer or (str(LLAMA3) if args.size == "1b" else "tiny")
    tokenizer, tokenizer_name = load_tokenizer(args.tokenizer, args.chat_template)
    probe = build_model(args.size, tokenizer, "sdpa", torch.float32, "meta")
    args.n_matmul = matmul_params(probe)
    args.layers, args.hidden = SIZES[args.size]["num_hidden_layers"], SIZES[args.size]["hidden_size"]
    kernels = ["sdpa"] + [name for name, available in FLASH.items() if cuda and available()]

    conversations = [alpaca(r) for r in read_jsonl("alpaca_cleaned_400.jsonl")]
    pairs = [{k: v for k, v in preference(r).items() if k != "messages"} for r in read_jsonl("preference_300.jsonl")]
    tokens = [min(len(tokenizer(tokenizer.apply_chat_template(c["messages"], tokenize=False),
                                add_special_tokens=False)["input_ids"]), args.max_length) for c in conversations]
    sft_data = repeated(conversations, tokens, args.steps * args.batch_size * args.max_length)
    dpo_data = repeated(pairs, [1] * len(pairs), args.steps * args.batch_size)

    device_name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    print(f"host: {device_name}, {os.cpu_count()} CPUs visible, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers/trl via deita-train; device {args.device}")
    print(f"model: {args.size} Llama, {sum(p.numel() for p in probe.parameters()) / 1e6:.1f}M parameters, "
          f"N (matmul) {args.n_matmul / 1e6:.1f}M, L {args.layers}, H {args.hidden}; tokenizer {tokenizer_name}")
    print(f"max_length {args.max_length}, batch {args.batch_size}, steps {args.steps} (first {args.warmup_steps} "
          f"untimed), {'bf16' if args.bf16 else 'fp32'}, checkpointing {args.gradient_checkpointing}; peak "
          f"{args.peak_flops / 1e12:.3f} TFLOP/s ({'given' if args.peak_tflops else 'measured fp32 matmul'})")
    for name in FLASH:
        if name not in kernels:
            print(f"{name}: not installed" if cuda else f"{name}: not available (no CUDA)")
    results = []
    for attention in kernels:
        for packing in (False, True):
            results.append(run("sft", attention, packing, args, tokenizer, sft_data))
            print(f"sft {attention} packing={packing}: {results[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
        results.append(run("dpo", attention, False, args, tokenizer, dpo_data))
        print(f"dpo {attention}: {results[-1]['tokens_per_s']:.0f} tokens/s", flush=True)

    memory = "peak allocated GiB" if cuda else "peak RSS GiB"
    print(f"| run | attention | packing | packed = alone | timed steps | tokens | tokens/s | model TFLOP/s | MFU | "
          f"{memory} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        packing = "on (bfd, padding-free)" if r["packing"] else "off"
        if r["packing"] and r["attention"] == "sdpa":
            packing += " [comparison only: recipes refuse packing without FlashAttention]"
        print(f"| {r['run']} | {r['attention']} | {packing} | {isolation_cell(r)} | {r['steps_timed']} | "
              f"{r['tokens']} | {r['tokens_per_s']:.0f} | {r['model_tflops']:.3f} | {100 * r['mfu']:.1f}% | "
              f"{r['peak_gib']:.2f} |")
    print("MFU: model FLOPs per conversation of n tokens, SFT 6*N*n + 12*L*H*n^2, DPO 8*N*n + 16*L*H*n^2 "
          f"(reference forward included), over {args.peak_flops / 1e12:.3f} TFLOP/s "
          f"({'given' if args.peak_tflops else 'measured fp32 matmul on this CPU'}).")
    if args.json:
        meta = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"host": device_name, "torch": torch.__version__, "tokenizer": tokenizer_name,
                                         "args": meta, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
