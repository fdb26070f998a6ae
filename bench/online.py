"""Online selection overhead: time spent re-scoring (and re-selecting) as a fraction of training time.

Runs `recipes/quickstart/online-cpu.yaml` on the tiny Llama the project builds (`deita-train tiny-model`),
once per `--pool-fraction`, with the same candidates, budget and epochs, plus one plain SFT run on a fixed
random subset of the same size (`~online`) as the no-online reference. For each run: the Trainer's
`train_runtime` (rounds included, they run inside `train()`), the rounds' own time from
`online/round_<k>/round.json` (`seconds.total`: scoring, gather, selection, writing; `seconds.score`: the
forward passes), and the ratio of the rounds' time to the rest of training. Every configuration runs
`--repeats` times, interleaved (a shared machine's load drifts); the table gives medians, and the ratio's
range over the repeats.

Per-batch selection (`--batch-ratio`, `online.every: batch`): plain SFT on every candidate against per-batch runs
drawing k x 8 rows per step and training the top 8; the overhead is the time per optimizer step over plain SFT's
(the scoring forward pass over the k x 8 drawn rows).

    PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/online.py --pool-fraction 0.25 0.5 1.0 --repeats 3 --batch-ratio 2 4
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from deita_train.cli.main import main as deita_train
from deita_train.training.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, model: Path, args: argparse.Namespace, *overrides: str) -> dict:
    """One `deita-train run` of the online recipe; the Trainer's runtime and the rounds' times."""
    code = deita_train([
        "run", str(REPO / "recipes/quickstart/online-cpu.yaml"), f"output_dir={out}", f"model.name_or_path={model}",
        "~dpo", "~score", "~select", "callbacks=[]", f"pool.0.limit={args.candidates}",
        f"pool.0.path={REPO / 'recipes/quickstart/data/alpaca_cleaned_400.jsonl'}",
        f"online.select.budget={args.budget}", f"sft.num_train_epochs={args.epochs}",
        f"sft.max_length={args.max_length}", f"online.scorer.max_length={args.max_length}",
        "sft.per_device_train_batch_size=8", "sft.logging_steps=1000", f"seed={args.seed}", *overrides,
    ])
    assert code == 0, f"run in {out} failed"
    state = json.loads((out / "sft" / "trainer_state.json").read_text())
    train = next(e["train_runtime"] for e in state["log_history"] if "train_runtime" in e)
    rounds = [json.loads(p.read_text()) for p in sorted((out / "online").glob("round_*/round.json"))]
    return {
        "train_runtime_s": train,
        "steps": state["global_step"],
        "rounds": len(rounds),
        "rescored_rows": sum(r["counts"]["rescored"] for r in rounds),
        "rounds_s": sum(r["seconds"]["total"] for r in rounds),
        "score_s": sum(r["seconds"]["score"] for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-fraction", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--candidates", type=int, default=128, help="pool rows the online rounds choose from")
    parser.add_argument("--budget", type=int, default=32, help="rows per epoch (4 steps of 8)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-ratio", type=int, nargs="*", default=[2, 4],
                        help="per-batch selection (`every: batch`) with these k, against plain SFT on every candidate")
    args = parser.parse_args()
    plain = ["~online", f"select={{strategy: random, budget: {args.budget}}}"]
    configurations = {"no online (fixed random subset)": plain}
    configurations |= {f"pool_fraction {f}": [f"online.pool_fraction={f}"] for f in args.pool_fraction}
    if args.batch_ratio:
        configurations["plain SFT, every candidate"] = ["~online"]
        configurations |= {f"per-batch k={k}": [f"online={{every: batch, batch_ratio: {k}}}"] for k in args.batch_ratio}
    results: dict[str, list[dict]] = {name: [] for name in configurations}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny-model")
        for repeat in range(args.repeats):
            for i, (name, overrides) in enumerate(configurations.items()):
                results[name].append(run(Path(tmp) / f"{repeat}-{i}", model, args, *overrides))
    for runs in results.values():
        for r in runs:
            r["ratio"] = r["rounds_s"] / (r["train_runtime_s"] - r["rounds_s"])
    print(json.dumps(results, indent=2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
          f"{args.candidates} candidates, budget {args.budget}, {args.epochs} epochs, max_length {args.max_length}, "
          f"{args.repeats} repeats (medians)")
    print("| run | steps | train_runtime (s) | rounds | rows re-scored | rounds (s) | of which forward passes (s) | "
          "rounds / rest of training (range) |")
    print("|---|---|---|---|---|---|---|---|")
    per_step = {name: [run["train_runtime_s"] / run["steps"] for run in runs] for name, runs in results.items()}
    for name, runs in results.items():
        if name.startswith(("per-batch", "plain SFT")):
            continue
        r = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
        ratios = [run["ratio"] for run in runs]
        print(f"| {name} | {r['steps']:.0f} | {r['train_runtime_s']:.1f} | {r['rounds']:.0f} | "
              f"{r['rescored_rows']:.0f} | "
              f"{r['rounds_s']:.1f} | {r['score_s']:.1f} | {r['ratio']:.1%} ({min(ratios):.1%}-{max(ratios):.1%}) |")
    if args.batch_ratio:
        print("\n| run (every candidate, batches of 8) | steps | s per optimizer step | per step, over plain SFT "
              "(range) |")
        print("|---|---|---|---|")
        base = per_step["plain SFT, every candidate"]
        for name in ["plain SFT, every candidate", *(f"per-batch k={k}" for k in args.batch_ratio)]:
            over = [run / plain_run for run, plain_run in zip(per_step[name], base, strict=True)]
            steps = float(np.median([run["steps"] for run in results[name]]))
            print(f"| {name} | {steps:.0f} | {np.median(per_step[name]):.3f} | {np.median(over):.2f}x "
                  f"({min(over):.2f}-{max(over):.2f}) |")


if __name__ == "__main__":
    main()
