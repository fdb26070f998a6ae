"""Scoring throughput: batched `ifd` and `deita_quality` vs one-sample-at-a-time reference loops, and the MFU of a
Deita scorer at 13B size.

    PYTHONPATH=. python bench/scoring.py --rows 48                      # CPU (2 cores: about 90 s)
    PYTHONPATH=. python bench/scoring.py --json scoring_h200.json       # GPU: every default below switches

Part 1, side by side on one model and the same rows. The reference loops are written the way the authors' code
works: batch 1, separate passes, fp32, full-vocabulary logits at every position (Superfiltering's
`get_perplexity_and_embedding_part_text`: `model(input_ids, labels=labels)`; Deita's `infer`:
`generate(..., output_scores=True)`, here with `max_new_tokens=1`, which only helps the reference: Deita asks for
up to 2048 new tokens). Both sides read real Alpaca rows (a seeded sample of `--data`) with the same random-weight
GPT-2-small-size model (default `GPT2Config`, 124M parameters) and the real GPT-2 tokenizer; the batched side runs
in `--dtype` (fp32 on CPU; bf16, the recipe's GPU choice, on CUDA) once per `--batch-tokens` value, the
reference in fp32 on the first `--reference-rows` rows (all of them on CPU). Speedup = samples/s over samples/s;
the max abs difference of the scores is taken over the rows both sides scored. After warm-up rows on each side,
times include everything a scorer does per batch (tokenizing, padding, the passes, copying scores back).

Part 2 (`--mfu-size`): `deita_quality` on a randomly initialised Llama in `--dtype`, `13b` = the Llama-2-13B
shape the released Deita scorers have (hidden 5120, 40 layers, 40 heads, intermediate 13824), `tiny` for a CPU
check of the same code path; tokenizer `--mfu-tokenizer`, by default the Llama-3 one (its tokenizer.json loads
without sentencepiece; the released scorers use Llama-2's 32,000 tokens, which changes only the embedding size and
the one LM-head position per prompt, under 0.1% of the FLOPs, and the token counts). MFU = forward FLOPs / time /
peak.

Forward FLOPs of a sequence of n tokens: 2*N*n + 4*L*H*n^2 + 2*V*H*r, N = parameters of the matrix products in the
decoder (all 2-D weights but the embeddings and the LM head), L layers, H hidden, V vocabulary, r = positions whose
logits the method needs (reference IFD: every position; batched IFD: the answer tokens; Deita: the last one).
Padding is not counted. Peak: `--peak-tflops` (989 = H100/H200 bf16 dense) on CUDA; on CPU a measured 2048^3 fp32
matmul, and the table of what batching can win says how close the reference already is to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2TokenizerFast, LlamaConfig

from bench.training import cpu_peak_flops
from deita_train.data.conversation import turns
from deita_train.scoring import SCORERS, ScoringContext, lm
from deita_train.scoring.batching import token_batches
from deita_train.scoring.deita import QUALITY_TEMPLATE, DeitaQualityScorer, DeitaScorerConfig
from deita_train.scoring.ifd import instruction_prompt, record_passes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MFU_SIZES = {
    "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40},
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def alpaca_rows(path: Path, count: int, seed: int) -> list[dict]:
    """`count` real Alpaca records (seeded sample) as canonical pool rows with their original fields."""
    data = json.loads(path.read_text())
    if count > len(data):
        raise SystemExit(f"--rows {count}: {path} has {len(data)} records")
    rows = random.Random(seed).sample(data, count)
    return [
        {"id": i, "source": "alpaca", **row, "messages": [
            {"role": "user",
             "content": f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]},
            {"role": "assistant", "content": row["output"]},
        ]}
        for i, row in enumerate(rows)
    ]


def build_gpt2(path: Path, tokenizer_dir: Path) -> Path:
    """A random-weight GPT-2-small-size model with the real GPT-2 tokenizer, saved to `path`."""
    tokenizer = GPT2TokenizerFast(tokenizer_file=str(tokenizer_dir / "tokenizer.json"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(GPT2Config()).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reference_part_loss(tokenizer, model, text: str, target: str, max_length: int) -> float:
    """Superfiltering's `get_perplexity_and_embedding_part_text`, loss only."""
    input_ids = tokenizer.encode(text, return_tensors="pt", truncation=True, max_length=max_length).to(model.device)
    start_token = len(tokenizer.encode(text[: text.rfind(target)]))
    labels = input_ids.clone()
    labels[0, :start_token] = -100
    with torch.no_grad():
        return float(model(input_ids, labels=labels).loss)


def reference_ifd(tokenizer, model, rows: list[dict], max_length: int = 1024) -> list[float]:
    """Superfiltering's per-sample loop: one conditioned and one direct pass per sample, exp(Lc)/exp(Ld)."""
    values = []
    for row in rows:
        prompt = instruction_prompt("superfiltering", row["instruction"], row["input"])
        prompt_len = len(tokenizer.encode(prompt, truncation=True, max_length=max_length))
        ld = reference_part_loss(tokenizer, model, row["output"], row["output"], max_length - prompt_len + 1)
        lc = reference_part_loss(tokenizer, model, prompt + row["output"], row["output"], max_length)
        values.append(math.exp(lc) / math.exp(ld))
    return values


def reference_quality(tokenizer, model, rows: list[dict]) -> list[float]:
    """Deita's `infer`: one prompt at a time through `generate`, expected digit over the six digit logits."""
    digits = [tokenizer.convert_tokens_to_ids(d) for d in "123456"]
    values = []
    for row in rows:
        text = QUALITY_TEMPLATE.format(instruction=row["messages"][0]["content"], output=row["output"])
        input_ids = tokenizer.encode(text, return_tensors="pt").to(model.device)
        out = model.generate(input_ids, max_new_tokens=1, num_return_sequences=1, return_dict_in_generate=True,
                             output_scores=True, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        probs = torch.softmax(out.scores[0][0][digits].double().cpu(), dim=0)
        values.append(float((probs * torch.arange(1, 7)).sum()))
    return values


def body_params(model) -> int:
    """N: parameters of the decoder's matrix products (2-D weights other than the embeddings and the LM head)."""
    skip = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    skip.add(id(model.get_output_embeddings().weight))
    return sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in skip)


def forward_flops(model, lengths: list[int], head_rows: list[int]) -> float:
    """2*N*n + 4*L*H*n^2 + 2*V*H*r summed over sequences (see the module docstring)."""
    config, n_body = model.config, body_params(model)
    layers, hidden = config.num_hidden_layers, config.hidden_size
    vocab = model.get_output_embeddings().weight.shape[0]
    return sum(2 * n_body * n + 4 * layers * n**2 * hidden + 2 * vocab * hidden * r
               for n, r in zip(lengths, head_rows, strict=True))


def timed(function: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def ifd_work(scorer, rows: list[dict]) -> tuple[list[list[int]], list[int], list[int]]:
    """Lengths of each pass kind (the scorer batches conditioned and direct passes apart), and the positions whose
    logits each side needs, in the order of the concatenated lengths."""
    passes = [p[0] for p in scorer.prepare(rows, direct=True) if not isinstance(p, str)]
    groups = [[len(t.conditioned) for t in passes], [len(t.direct) for t in passes]]
    answers = [len(t.conditioned) - t.conditioned_start for t in passes]
    answers += [len(t.direct) - t.direct_start for t in passes]
    return groups, groups[0] + groups[1], answers  # the reference computes logits at every position


def deita_work(scorer, rows: list[dict]) -> tuple[list[list[int]], list[int], list[int]]:
    lengths = [len(scorer.prompt_ids(scorer.fields(turns(r["messages"])[0]))[0]) for r in rows]
    return [lengths], [1] * len(rows), [1] * len(rows)


def padding(groups: list[list[int]], budget: int) -> float:
    """Padded tokens over real tokens of the batches the scorer forms (`token_batches`) at `budget`."""
    padded = sum(len(batch) * lengths[batch[0]] for lengths in groups for batch in token_batches(lengths, budget))
    return padded / sum(map(sum, groups))


def ifd_preparation(scorer, rows: list[dict]) -> dict[str, float]:
    """Samples/s of building IFD's passes on the host: the scorer's one tokenizer call per batch vs one per text."""
    per_text = partial(lm.encode, scorer.tokenizer)
    config = scorer.config
    _, batched_s = timed(lambda: scorer.prepare(rows, direct=True))
    _, per_text_s = timed(lambda: [record_passes(per_text, scorer.bos, r, config.convention, scorer.max_length)
                                   for r in rows])
    return {"batched": len(rows) / batched_s, "per_text": len(rows) / per_text_s}


def side_by_side(args, rows: list[dict], model_dir: Path) -> list[dict]:
    """Part 1: each scorer batched (per token budget) and as the reference loop, on the same model and rows."""
    tokenizer = GPT2TokenizerFast.from_pretrained(model_dir)
    reference_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(args.device).eval()
    reference_rows = rows[: args.reference_rows]
    results = []
    for kind, reference, work in [
        ("ifd", lambda subset: reference_ifd(tokenizer, reference_model, subset), ifd_work),
        ("deita_quality", lambda subset: reference_quality(tokenizer, reference_model, subset), deita_work),
    ]:
        reference(rows[: args.warmup_rows])
        reference_values, reference_s = timed(lambda: reference(reference_rows))  # noqa: B023
        shapes = None  # what the rows tokenize to does not depend on the budget: built once per scorer
        for budget in args.batch_tokens:
            cls = SCORERS.get(kind, kind)
            options = {"max_length": 1024} if kind == "deita_quality" else {}
            scorer = cls(cls.config_class(type=kind, model=str(model_dir), dtype=args.dtype, batch_tokens=budget,
                                          **options), ScoringContext())
            scorer.load()
            scorer.score_batch(rows[: args.warmup_rows])
            scores, batched_s = timed(lambda: scorer.score_batch(rows))  # noqa: B023
            if shapes is None:
                shapes = (work(scorer, rows), work(scorer, reference_rows),
                          ifd_preparation(scorer, rows) if kind == "ifd" else None)
            (groups, _, needed_heads), (reference_groups, reference_heads, reference_needed), prepare = shapes
            lengths = [n for group in groups for n in group]
            reference_lengths = [n for group in reference_groups for n in group]
            # unscorable rows (e.g. a one-token answer: no BOS to predict it from) have no value to compare
            diff = max(abs(s.value[0] - v) for s, v in zip(scores, reference_values, strict=False)
                       if s.value is not None)
            results.append({
                "scorer": kind, "batch_tokens": budget, "dtype": args.dtype, "rows": len(rows),
                "tokens": sum(lengths), "batched_s": batched_s, "reference_rows": len(reference_rows),
                "reference_tokens": sum(reference_lengths), "reference_s": reference_s,
                "speedup": (len(rows) / batched_s) / (len(reference_rows) / reference_s), "max_abs_diff": diff,
                "unscorable": sum(s.value is None for s in scores), "padding": padding(groups, budget),
                "prepare": prepare,
                "batched_flops": forward_flops(scorer.model, lengths, needed_heads),
                "reference_flops": forward_flops(reference_model, reference_lengths, reference_heads),
                "needed_flops_reference_rows": forward_flops(reference_model, reference_lengths, reference_needed),
            })
            print(f"{kind} batch_tokens {budget}: batched {batched_s:.1f}s ({len(rows)} rows), reference "
                  f"{reference_s:.1f}s ({len(reference_rows)} rows), max abs diff {diff:.2e}", flush=True)
            scorer.close()
    return results


def deita_mfu(args, rows: list[dict]) -> dict:
    """Part 2: `deita_quality` on a random Llama of `--mfu-size` in `--dtype`, its samples/s and MFU."""
    tokenizer = AutoTokenizer.from_pretrained(args.mfu_tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), **MFU_SIZES[args.mfu_size], max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[args.dtype], attn_implementation="sdpa").eval()
    scorer = DeitaQualityScorer(DeitaScorerConfig(type="deita_quality", batch_tokens=args.mfu_batch_tokens),
                                ScoringContext())
    scorer.use(model, tokenizer)
    scorer.score_batch(rows[: args.warmup_rows])
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    scores, seconds = timed(lambda: scorer.score_batch(rows))
    lengths = deita_work(scorer, rows)[0][0]
    flops = forward_flops(model, lengths, [1] * len(rows))
    result = {"size": args.mfu_size, "parameters": sum(p.numel() for p in model.parameters()),
              "batch_tokens": args.mfu_batch_tokens, "dtype": args.dtype, "rows": len(rows), "tokens": sum(lengths),
              "seconds": seconds, "samples_per_s": len(rows) / seconds, "tokens_per_s": sum(lengths) / seconds,
              "tflops": flops / seconds / 1e12, "mfu": flops / seconds / args.peak_flops,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
              "scored": sum(s.value is not None for s in scores)}
    return result


def print_tables(args, results: list[dict], mfu: dict | None) -> None:
    print("| scorer | batch tokens | dtype | rows | tokens | batched samples/s | batched tokens/s | reference rows | "
          "reference samples/s | reference tokens/s | speedup | max abs diff | padded / real tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scorer']} | {r['batch_tokens']} | {r['dtype']} | {r['rows']} | {r['tokens']} | "
              f"{r['rows'] / r['batched_s']:.2f} | {r['tokens'] / r['batched_s']:.0f} | {r['reference_rows']} | "
              f"{r['reference_rows'] / r['reference_s']:.2f} | {r['reference_tokens'] / r['reference_s']:.0f} | "
              f"{r['speedup']:.2f}x | {r['max_abs_diff']:.2e} | {r['padding']:.2f} |")
    for r in results:
        if r["prepare"]:
            print(f"\nHost-side IFD preparation of {r['rows']} rows (tokenizing, building both passes; no model): "
                  f"{r['prepare']['batched']:.0f} samples/s with one tokenizer call per batch (the scorer), "
                  f"{r['prepare']['per_text']:.0f} with one call per text. A GPU cannot score faster than this.")
            break
    print(f"\nForward FLOP rates against the peak ({args.peak_flops / 1e12:.3f} TFLOP/s, {args.peak_source}); "
          "ceiling = the speedup a scorer doing only the FLOPs a score needs at 100% of the peak would reach.")
    print("| scorer | batch tokens | reference TFLOP/s | reference MFU | batched TFLOP/s | batched MFU | ceiling |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        reference_rate, batched_rate = r["reference_flops"] / r["reference_s"], r["batched_flops"] / r["batched_s"]
        ceiling = r["reference_s"] * args.peak_flops / r["needed_flops_reference_rows"]
        print(f"| {r['scorer']} | {r['batch_tokens']} | {reference_rate / 1e12:.3f} | "
              f"{reference_rate / args.peak_flops:.1%} | {batched_rate / 1e12:.3f} | "
              f"{batched_rate / args.peak_flops:.1%} | {ceiling:.2f}x |")
    if mfu:
        peak = f"{mfu['peak_gib']:.1f}" if mfu["peak_gib"] is not None else "n/a"
        print(f"\ndeita_quality on a random {mfu['size']} Llama ({mfu['parameters'] / 1e9:.2f}B parameters, "
              f"{mfu['dtype']}, batch tokens {mfu['batch_tokens']}):")
        print("| rows | tokens | samples/s | tokens/s | forward TFLOP/s | MFU | peak allocated GiB |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {mfu['rows']} | {mfu['tokens']} | {mfu['samples_per_s']:.1f} | {mfu['tokens_per_s']:.0f} | "
              f"{mfu['tflops']:.3f} | {mfu['mfu']:.1%} | {peak} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--rows", type=int, default=9000 if cuda else 48, help="Alpaca rows the batched side scores")
    parser.add_argument("--reference-rows", type=int, default=1000 if cuda else None,
                        help="the first rows of those, scored by the reference loop (default: all on CPU)")
    parser.add_argument("--warmup-rows", type=int, default=8, help="untimed rows each side scores first")
    parser.add_argument("--batch-tokens", type=int, nargs="+", default=[16384, 65536] if cuda else [2048],
                        help="token budget(s) per batched forward pass; one batched run per value")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16" if cuda else "float32",
                        help="weights of the batched side and the MFU model (the reference stays fp32)")
    parser.add_argument("--mfu-size", choices=[*MFU_SIZES, "none"], default="13b" if cuda else "none")
    parser.add_argument("--mfu-rows", type=int, default=2000 if cuda else 16)
    parser.add_argument("--mfu-batch-tokens", type=int, default=16384)
    parser.add_argument("--data", type=Path, default=SHARED / "instruct" / "alpaca_original_random_9k.json")
    parser.add_argument("--gpt2-tokenizer", type=Path, default=SHARED / "tokenizers" / "gpt2")
    parser.add_argument("--mfu-tokenizer", type=Path, default=SHARED / "tokenizers" / "llama3",
                        help="tokenizer folder of the MFU model (it needs single tokens '1'..'6')")
    parser.add_argument("--peak-tflops", type=float, default=989.0 if cuda else None,
                        help="peak FLOP/s for MFU (989: H100/H200 bf16 dense); on CPU default: measured matmul")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.device = "cuda" if cuda else "cpu"
    args.reference_rows = args.reference_rows or args.rows
    if not 0 < args.reference_rows <= args.rows:
        parser.error(f"--reference-rows must be in [1, --rows]; got {args.reference_rows}")
    if args.dtype == "bfloat16" and not cuda:
        parser.error("--dtype bfloat16 needs CUDA here (this CPU has no bf16 matrix units); use float32")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else cpu_peak_flops()
    args.peak_source = "given" if args.peak_tflops else "measured fp32 2048^3 matmul on this CPU"
    host = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    print(f"host: {host}, {os.cpu_count()} CPUs visible, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads); peak {args.peak_flops / 1e12:.3f} TFLOP/s ({args.peak_source})", flush=True)

    rows = alpaca_rows(args.data, max(args.rows, args.mfu_rows), args.seed)
    model_dir = build_gpt2(Path(tempfile.mkdtemp(prefix="bench-gpt2-")), args.gpt2_tokenizer)
    results = side_by_side(args, rows[: args.rows], model_dir)
    if cuda:
        torch.cuda.empty_cache()
    mfu = deita_mfu(args, rows[: args.mfu_rows]) if args.mfu_size != "none" else None
    print_tables(args, results, mfu)
    if args.json:
        meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"host": host, "torch": torch.__version__, "args": meta,
                                         "side_by_side": results, "deita_mfu": mfu}, indent=2))


if __name__ == "__main__":
    main()
