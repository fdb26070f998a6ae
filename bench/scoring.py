"""Scoring throughput: batched `ifd` and `deita_quality` vs one-sample-at-a-time reference loops.

The reference loops are written the way the authors' code works: batch 1, separate passes, fp32,
full-vocabulary logits at every position (Superfiltering's `get_perplexity_and_embedding_part_text`:
`model(input_ids, labels=labels)`; Deita's `infer`: `generate(..., output_scores=True)`, here with
`max_new_tokens=1`, which only helps the reference: Deita asks for up to 2048 new tokens). Both
sides read the same real Alpaca rows with the same random-weight GPT-2-small-size model (default
`GPT2Config`, 124M parameters) and the real GPT-2 tokenizer, and the max abs difference of their
scores is reported.

    python bench/scoring.py --rows 48
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
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2TokenizerFast

from deita_train.data.conversation import turns
from deita_train.scoring import SCORERS, ScoringContext
from deita_train.scoring.deita import QUALITY_TEMPLATE
from deita_train.scoring.ifd import instruction_prompt

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def alpaca_rows(count: int, seed: int) -> list[dict]:
    """`count` real Alpaca records (seeded sample) as canonical pool rows with their original fields."""
    data = json.loads((SHARED / "instruct" / "alpaca_original_random_9k.json").read_text())
    rows = random.Random(seed).sample(data, count)
    return [
        {"id": i, "source": "alpaca", **row, "messages": [
            {"role": "user",
             "content": f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]},
            {"role": "assistant", "content": row["output"]},
        ]}
        for i, row in enumerate(rows)
    ]


def build_model(path: Path) -> Path:
    tokenizer = GPT2TokenizerFast(tokenizer_file=str(SHARED / "tokenizers" / "gpt2" / "tokenizer.json"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(GPT2Config()).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reference_part_loss(tokenizer, model, text: str, target: str, max_length: int) -> float:
    """Superfiltering's `get_perplexity_and_embedding_part_text`, loss only."""
    input_ids = tokenizer.encode(text, return_tensors="pt", truncation=True, max_length=max_length)
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
        input_ids = tokenizer.encode(text, return_tensors="pt")
        out = model.generate(input_ids, max_new_tokens=1, num_return_sequences=1, return_dict_in_generate=True,
                             output_scores=True, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        probs = torch.softmax(out.scores[0][0][digits].double(), dim=0)
        values.append(float((probs * torch.arange(1, 7)).sum()))
    return values


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matrix-product rate (FLOP/s): the ceiling any forward pass here can reach."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    _, seconds = timed(lambda: [torch.mm(a, b) for _ in range(repeats)])
    return 2 * size**3 * repeats / seconds


def forward_flops(config: GPT2Config, lengths: list[int], head_rows: list[int]) -> float:
    """GPT-2 forward FLOPs: 2 x 12 x layers x hidden^2 per token (attention and MLP weights), 4 x layers x L^2 x
    hidden for attention scores and mixing, 2 x vocab x hidden per position that gets logits."""
    layers, hidden, vocab = config.n_layer, config.n_embd, config.vocab_size
    return sum(24 * layers * hidden**2 * length + 4 * layers * length**2 * hidden + 2 * vocab * hidden * rows
               for length, rows in zip(lengths, head_rows, strict=True))


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=48, help="Alpaca rows scored by each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-tokens", type=int, default=2048, help="token budget per batched forward pass")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = alpaca_rows(args.rows, args.seed)
    model_dir = build_model(Path(tempfile.mkdtemp(prefix="bench-gpt2-")))
    tokenizer = GPT2TokenizerFast.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    results = []
    for kind, options, reference in [
        ("ifd", {}, lambda: reference_ifd(tokenizer, model, rows)),
        ("deita_quality", {"max_length": 1024}, lambda: reference_quality(tokenizer, model, rows)),
    ]:
        cls = SCORERS.get(kind, kind)
        scorer = cls(cls.config_class(type=kind, model=str(model_dir), dtype="float32",
                                      batch_tokens=args.batch_tokens, **options), ScoringContext())
        scorer.load()
        scores, batched_s = timed(lambda: scorer.score_batch(rows))  # noqa: B023
        reference_values, reference_s = timed(reference)
        if kind == "ifd":
            from deita_train.scoring.ifd import record_passes

            prepared = [record_passes(scorer.tokenizer, scorer.bos, r, "superfiltering", 1024) for r in rows]
            passes = [p[0] for p in prepared if not isinstance(p, str)]
            lengths = [len(t.conditioned) for t in passes] + [len(t.direct) for t in passes]
            answers = [len(t.conditioned) - t.conditioned_start for t in passes]
            answers += [len(t.direct) - t.direct_start for t in passes]
            reference_flops = forward_flops(model.config, lengths, lengths)  # logits at every position
            needed_flops = forward_flops(model.config, lengths, answers)
        else:
            lengths = [len(scorer.prompt_ids(scorer.fields(turns(r["messages"])[0]))[0]) for r in rows]
            reference_flops = needed_flops = forward_flops(model.config, lengths, [1] * len(lengths))
        tokens = sum(lengths)
        # unscorable rows (e.g. a one-token answer: no BOS to predict it from) have no value to compare
        diff = max(abs(s.value[0] - v) for s, v in zip(scores, reference_values, strict=True) if s.value is not None)
        print(f"{kind}: batched {batched_s:.1f}s, reference {reference_s:.1f}s, "
              f"unscorable {sum(s.value is None for s in scores)}", flush=True)
        scorer.close()
        results.append({"scorer": kind, "rows": len(rows), "tokens": tokens, "batched_s": batched_s,
                        "reference_s": reference_s, "speedup": reference_s / batched_s, "max_abs_diff": diff,
                        "reference_flops": reference_flops, "needed_flops": needed_flops})
    peak = matmul_peak()
    host = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {host}, "
          f"fp32 2048^3 matmul {peak / 1e9:.0f} GFLOP/s")
    print("| scorer | rows | tokens | batched samples/s | batched tokens/s | reference samples/s | "
          "reference tokens/s | speedup | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scorer']} | {r['rows']} | {r['tokens']} | {r['rows'] / r['batched_s']:.2f} | "
              f"{r['tokens'] / r['batched_s']:.0f} | {r['rows'] / r['reference_s']:.2f} | "
              f"{r['tokens'] / r['reference_s']:.0f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.2e} |")
    print("\nWhat batching can win here: the reference's rate as a share of the matmul rate, and the speedup a scorer "
          "would reach if it ran only the FLOPs a score needs at the full matmul rate.")
    print("| scorer | reference GFLOP/s | of matmul rate | batched GFLOP/s (needed work) | ceiling speedup |")
    print("|---|---|---|---|---|")
    for r in results:
        reference_rate = r["reference_flops"] / r["reference_s"]
        print(f"| {r['scorer']} | {reference_rate / 1e9:.0f} | {reference_rate / peak:.0%} | "
              f"{r['needed_flops'] / r['batched_s'] / 1e9:.0f} | {r['reference_s'] * peak / r['needed_flops']:.2f}x |")


if __name__ == "__main__":
    main()
