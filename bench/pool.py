"""Pools of millions of rows: time and peak RSS of each command of our path beside the plain-`datasets` anchor.

Each measured step runs in a fresh process; its peak RSS is the largest resident set of any one process of it (the
command and its `map` workers, or each process of a launch), read with `getrusage(RUSAGE_CHILDREN)`. Our (a), the
anchor and each (b) start from their own emptied datasets cache (`<work>/cache-*`): each loads its pool cold.

    (a) an Alpaca-like JSONL pool with the `length` scorer (a GPT-2 tokenizer) and `top_k` 10,000:
        ours: `deita-train score`, then `deita-train select` (per command);
        anchor: `load_dataset("json")`, one batched `map(num_proc=2)` building `messages` and counting tokens,
        an argsort, `select`, `save_to_disk`; optional: the same `run` under a 2-process `accelerate launch`;
    (b) a Parquet pool whose score columns are already there: load, a filter, `top_k`, save (`deita-train run`),
        at --rows and at --big-rows, so the two peak RSS figures show whether memory is flat in the pool size;
    (c) a second `deita-train select` with another budget on (b)'s output directory at --big-rows.

    python bench/pool.py --rows 1000000 --big-rows 10000000 --tokenizer ../shared/data/tokenizers/gpt2 --work /tmp/pool
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

WORDS = np.array(
    "the a of to and in is for that with on as be by this are from or at an it which can use data model "
    "write explain describe list give how what why three example simple short story poem code function "
    "python value number table answer question result first second step process system user time world "
    "people work make find change learn help important different common best good new large small".split()
)
CHUNK = 250_000  # rows generated (and written) at a time


def texts(rng: np.random.Generator, rows: int, low: int, high: int) -> list[str]:
    """`rows` texts of `low`..`high` random words."""
    counts = rng.integers(low, high + 1, rows)
    words = WORDS[rng.integers(0, len(WORDS), int(counts.sum()))]
    ends = np.cumsum(counts)
    return [" ".join(words[end - count:end]) for count, end in zip(counts, ends, strict=True)]


def chunk_table(rng: np.random.Generator, rows: int, with_scores: bool) -> pa.Table:
    """Alpaca-like records, about 415 bytes each as JSON: an instruction, an input on 30% of rows, an output."""
    inputs = texts(rng, rows, 5, 15)
    has_input = rng.random(rows) < 0.3
    columns = {
        "instruction": texts(rng, rows, 8, 16),
        "input": [text if keep else "" for text, keep in zip(inputs, has_input, strict=True)],
        "output": texts(rng, rows, 35, 65),
    }
    if with_scores:
        columns |= {"quality": rng.random(rows) * 5 + 1, "length": rng.integers(1, 400, rows)}
    return pa.table(columns)


def generate(path: Path, rows: int, with_scores: bool, seed: int = 0) -> Path:
    """Write the pool once (JSONL or Parquet by suffix); an existing file of that name is reused."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    staging = path.with_name(f".{path.name}.part")
    writer = pq.ParquetWriter(staging, chunk_table(rng, 1, with_scores).schema) if path.suffix == ".parquet" else None
    with staging.open("a" if writer else "w") as handle:
        for start in range(0, rows, CHUNK):
            table = chunk_table(rng, min(CHUNK, rows - start), with_scores)
            if writer:
                writer.write_table(table)
            else:
                handle.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
    if writer:
        writer.close()
    staging.rename(path)
    return path


def measure(command: list[str], cache: Path) -> dict[str, float]:
    """Wall seconds and peak RSS (GiB) of the largest process of `command`, run under a fresh wrapper process so
    that no earlier step's peak is counted, with `cache` as its datasets cache."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "wrap", *command], capture_output=True, text=True,
                          env=os.environ | {"HF_DATASETS_CACHE": str(cache)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "peak_rss_gib": last.pop("peak_rss_gib"), **last}


def wrap(command: list[str]) -> None:
    """Run `command`; print its last stdout line's JSON (if any) with the peak RSS of its largest process."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(done.returncode)
    lines = done.stdout.strip().splitlines()
    steps = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps(steps | {"peak_rss_gib": round(peak, 2)}))


def run_alone(args: list[str], cache: Path) -> dict[str, float]:
    """`python bench/pool.py <args>` measured in a fresh process."""
    return measure([sys.executable, __file__, *args], cache)


def empty_cache(path: Path) -> Path:
    """A datasets cache folder emptied, so that the next command loads its pool cold."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def anchor(data: Path, tokenizer: str, out: Path, budget: int) -> None:
    """The plain-`datasets` way of (a); prints its step times as JSON."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    steps, started = {}, time.perf_counter()
    pool = load_dataset("json", data_files=str(data), split="train")
    steps["load"] = time.perf_counter() - started
    tok = AutoTokenizer.from_pretrained(tokenizer)

    def canonical(batch):
        users = [f"{i}\n{x}" if x else i for i, x in zip(batch["instruction"], batch["input"], strict=True)]
        counts = tok(users, add_special_tokens=False)["input_ids"], tok(batch["output"], add_special_tokens=False)[
            "input_ids"]
        return {"messages": [[{"role": "user", "content": u}, {"role": "assistant", "content": o}]
                             for u, o in zip(users, batch["output"], strict=True)],
                "length": [len(a) + len(b) for a, b in zip(*counts, strict=True)]}

    started = time.perf_counter()
    pool = pool.map(canonical, batched=True, num_proc=2)
    steps["map"] = time.perf_counter() - started
    started = time.perf_counter()
    order = np.argsort(-pool.data.column("length").to_numpy(), kind="stable")[:budget]
    pool.select(order).save_to_disk(str(out))
    steps["select_save"] = time.perf_counter() - started
    print(json.dumps({k: round(v, 1) for k, v in steps.items()}))


def tokenizer_folder(source: Path, work: Path) -> Path:
    """A copy of the GPT-2 `tokenizer.json` folder with the `tokenizer_config.json` transformers needs to load it."""
    folder = work / "gpt2"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2TokenizerFast", "model_max_length": 1_000_000, "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    return folder


def recipe(path: Path, out: Path, data: Path, select: dict, score: dict | None, tokenizer: str | None) -> Path:
    body = {"output_dir": str(out), "pool": [{"path": str(data), "format": "alpaca"}], "select": select}
    if score:
        body |= {"model": {"name_or_path": tokenizer}, "score": score}
    path.write_text(yaml.safe_dump(body))
    return path


def deita(command: str, path: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "deita_train", command, str(path), *overrides]


class Figures(dict):
    """Each figure printed (and the JSON rewritten) as soon as it is measured, so a failing step loses none."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path

    def __setitem__(self, name: str, figure: dict) -> None:
        super().__setitem__(name, figure)
        print(f"{name:<55} " + "  ".join(f"{k} {v}" for k, v in figure.items()), flush=True)
        if self.path:
            self.path.write_text(json.dumps(self, indent=2) + "\n")


def main() -> None:
    if sys.argv[1:2] == ["wrap"]:  # a measured step (see `measure`)
        wrap(sys.argv[2:])
        return
    if sys.argv[1:2] == ["anchor"]:  # the anchor, run by `run_alone` in its own process
        anchor(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--tokenizer", type=Path, required=True, help="../shared/data/tokenizers/gpt2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deita-pool-bench"))
    parser.add_argument("--processes", type=int, default=2, help="launch (a) with this many processes; 1: skip")
    parser.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "anchor"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = str(tokenizer_folder(args.tokenizer, args.work))
    figures = Figures(args.json)
    small = generate(args.work / f"alpaca_{args.rows}.jsonl", args.rows, with_scores=False)
    if "a" not in args.skip:
        a = recipe(args.work / "a.yaml", args.work / "a_out", small, {"strategy": "top_k", "score": "length",
                   "budget": args.budget}, {"length": {"type": "length"}}, tokenizer)
        cache = empty_cache(args.work / "cache-a")
        figures["a: ours, score"] = measure(deita("score", a, "--force"), cache)
        figures["a: ours, select"] = measure(deita("select", a, "--force"), cache)
        if args.processes > 1:  # both on the cached pool, into fresh output folders (no shard reused)
            figures["a: ours, score, pool cached, 1 process"] = measure(
                deita("score", a, f"output_dir={args.work / 'a1_out'}", "--force"), cache)
            launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes",
                      str(args.processes), "-m", "deita_train", "score", str(a), f"output_dir={args.work / 'a2_out'}",
                      "--force"]
            figures[f"a: ours, score, pool cached, {args.processes} processes"] = measure(launch, cache)
    if "anchor" not in args.skip:
        figures["a: anchor"] = run_alone(["anchor", str(small), tokenizer, str(args.work / "anchor_out"),
                                          str(args.budget)], empty_cache(args.work / "cache-anchor"))
    select = {"strategy": "top_k", "score": "quality", "budget": args.budget, "filters": ["length > 10"]}
    for rows in ([args.rows, args.big_rows] if "b" not in args.skip else []):
        data = generate(args.work / f"scored_{rows}.parquet", rows, with_scores=True)
        b = recipe(args.work / f"b_{rows}.yaml", args.work / f"b_{rows}_out", data, select, None, None)
        cache = empty_cache(args.work / f"cache-b-{rows}")
        figures[f"b: {rows:,} rows, load + filter + top_k + save"] = measure(deita("run", b, "--force"), cache)
        if rows == args.big_rows and "c" not in args.skip:
            second = deita("select", b, f"select.budget={args.budget * 2}")
            figures[f"c: {rows:,} rows, a second select"] = measure(second, cache)


if __name__ == "__main__":
    main()
