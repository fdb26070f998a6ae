"""Does selection inside training help? Held-out loss and noise trained on, for each way of choosing the SFT data.

The task is one a tiny Llama learns on a CPU in a few hundred steps: reverse a string of 4-7 letters written with
spaces (`reverse: k a t e` -> `e t a k`; each letter is one token of the `deita-train tiny-model` tokenizer). The
pool is an Alpaca JSONL in which a known `--noise` share of the rows has its answer shuffled across those rows (it
belongs to another instruction). The held-out eval set and the reference set are clean rows of the same task.

The reference model is the tiny model trained on the reference set (`--reference-rows` clean rows, not in the pool,
`--reference-steps` steps): RHO-LOSS's irreducible-loss model, and the "weak model" the offline scorers run (IFD
from the untrained model is noise). It scores the pool offline: `reference_loss` (`loss`: mean answer-token loss)
and `reference_ifd` (`ifd`, Superfiltering's convention). Every variant trains the same tiny model from the same
initial weights through `deita-train run`, for `--steps` optimizer steps of `--batch-size` rows at a constant
learning rate; the subsets hold `--budget` rows:

- full: the whole pool.
- random: `select: random`.
- offline IFD: `select: superfilter` on `reference_ifd` (keep IFD < 1, the highest first).
- offline RHO-LOSS: `select: top_k` on `initial_loss - reference_loss`, the highest first (`initial_loss`: `loss`
  under the initial weights of the model being trained, i.e. RHO-LOSS at step 0).
- online IFD: `online:` every epoch, `ifd` under the model being trained, `top_k` (highest IFD: what the model has
  not learned yet), as in `recipes/quickstart/online-cpu.yaml`.
- online RHO-LOSS: `online:` every epoch, `loss` under the model being trained, `top_k` on `score - reference_loss`.
- per-batch loss: `online: {every: batch, batch_ratio: k}` over the whole pool: each step draws k x the batch and
  trains on the rows with the highest training loss.
- per-batch RHO-LOSS: the same, with `batch_reference: mean(reference_loss)` (training loss minus reference loss).
- weights: the whole pool with `sft.sample_weight: 2.718281828 ** -sum(reference_loss)` (the reference model's
  per-token probability of the answer, geometric mean).

Figures per variant: the held-out loss of the final weights (`sft/eval_results.json`: TRL's eval loss over the
answer tokens of the eval set) and the share of noise among the rows trained on (subsets: `selected/`; online: each
round's `selected.json`, averaged over the rounds, one per epoch; per batch: the rows the steps kept, read back from
their tokens, since per-batch selection records no ids; full: the pool; weights: the weight mass on noisy rows).
Each seed draws its own pool, reference, eval set, model initialization and data order; the table gives the mean,
the standard deviation and the range over the seeds, and on how many seeds a variant's loss is below that of `full`
and of the reference model on the same seed. The table's first row is the reference model itself (its own clean
rows, `--reference-steps` steps), for scale: the scored variants had its rows' information through the scores.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/online_quality.py --seeds 0 1 2 3 4 --json online_quality.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from datasets import load_from_disk
from transformers import AutoTokenizer

from deita_train.cli.main import main as deita_train
from deita_train.online.batch_selection import BatchSelectingSFTTrainer
from deita_train.selection.scores import sample_scores
from deita_train.training.tiny_model import TinyModelConfig, build_tiny_model

LETTERS = "abcdefghijklmnoprstvwxyz"  # one token each, alone and after a space, in the tiny tokenizer ("q", "u" split)
WEIGHT = "2.718281828 ** -sum(reference_loss)"
# The scorers read `<s>{instruction}\n{answer}` (Superfiltering's convention), not the chat template: train on that
# text, so that they measure what the model learned (a reference model trained on ChatML text gave clean rows a
# plain-text answer loss of 6.2 against 7.5 for noisy ones, 2.5 against 4.9 with this template; bench/RESULTS.md).
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + eos_token }}{% endgeneration %}{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
)


@dataclass
class Setup:
    """One seed's data, models and options."""

    folder: Path
    seed: int
    model: Path
    reference: Path
    noisy: set[int]  # pool ids whose answer belongs to another row
    args: argparse.Namespace


def task_row(rng: random.Random) -> dict[str, str]:
    letters = [rng.choice(LETTERS) for _ in range(rng.randint(4, 7))]
    return {"instruction": "reverse: " + " ".join(letters), "input": "", "output": " ".join(reversed(letters))}


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_data(folder: Path, seed: int, args: argparse.Namespace) -> set[int]:
    """pool.jsonl (a `--noise` share of its answers moved to other noisy rows), reference.jsonl, eval.jsonl; the
    noisy pool ids."""
    rng = random.Random(seed)
    pool = [task_row(rng) for _ in range(args.pool)]
    noisy = sorted(rng.sample(range(args.pool), round(args.noise * args.pool)))
    answers = [pool[i]["output"] for i in noisy]
    for i, answer in zip(noisy, answers[1:] + answers[:1], strict=True):  # a cycle: no row keeps its own answer
        pool[i] = {**pool[i], "output": answer}
    write_jsonl(folder / "pool.jsonl", pool)
    write_jsonl(folder / "reference.jsonl", [task_row(rng) for _ in range(args.reference_rows)])
    write_jsonl(folder / "eval.jsonl", [task_row(rng) for _ in range(args.eval_rows)])
    return set(noisy)


def recipe(setup: Setup, name: str, steps: int, data: str = "pool.jsonl", **sections: dict) -> Path:
    """A run recipe: the initial weights trained on `data` for `steps` steps, the eval set held out, plus `sections`
    (score, select, online, sft options)."""
    args = setup.args
    sft = {
        "eval_dataset": [{"path": str(setup.folder / "eval.jsonl"), "format": "alpaca"}],
        "max_steps": steps, "per_device_train_batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "lr_scheduler_type": "constant", "max_length": 64, "logging_steps": 50, "save_strategy": "no",
        "use_cpu": True, **sections.pop("sft", {}),
    }
    document = {
        "output_dir": str(setup.folder / name), "seed": setup.seed,
        "model": {"name_or_path": str(setup.model), "dtype": "float32", "chat_template": "model"},
        "pool": [{"path": str(setup.folder / data), "format": "alpaca"}], **sections, "sft": sft,
    }
    path = setup.folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def train(setup: Setup, name: str, **sections: dict) -> Path:
    """`deita-train run` of the variant's recipe; its output folder."""
    path = recipe(setup, name, setup.args.steps, **sections)
    assert deita_train(["run", str(path)]) == 0, f"{name} failed (seed {setup.seed})"
    return setup.folder / name


def result(setup: Setup, out: Path, noise: float) -> dict[str, float]:
    evaluation = json.loads((out / "sft" / "eval_results.json").read_text())
    return {"eval_loss": evaluation["eval_loss"], "noise_trained": noise}


def reference_loss(setup: Setup) -> dict[str, dict]:
    """The offline score column `reference_loss`: each row's mean answer-token loss under the reference model."""
    return {"reference_loss": {"type": "loss", "model": str(setup.reference)}}


def noise_share(setup: Setup, ids: list[int]) -> float:
    return sum(i in setup.noisy for i in ids) / len(ids)


def selected_noise(setup: Setup, out: Path) -> float:
    return noise_share(setup, load_from_disk(str(out / "selected"))["id"])


def online_result(setup: Setup, out: Path) -> dict:
    """`result` with the noise share of each round's selection (one round per epoch, each trained on for the same
    steps), averaged, and listed by round."""
    rounds = sorted((out / "online").glob("round_*/selected.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    by_round = [noise_share(setup, json.loads(p.read_text())) for p in rounds]
    return {**result(setup, out, float(np.mean(by_round))), "noise_by_round": by_round}


def reference_alone(setup: Setup) -> dict[str, float]:
    """Not a variant: the reference model itself (trained in `prepare`), what its clean rows give on their own."""
    return result(setup, setup.folder / "reference", 0.0)


def full(setup: Setup) -> dict[str, float]:
    return result(setup, train(setup, "full"), len(setup.noisy) / setup.args.pool)


def random_subset(setup: Setup) -> dict[str, float]:
    out = train(setup, "random", select={"strategy": "random", "budget": setup.args.budget})
    return result(setup, out, selected_noise(setup, out))


def offline_ifd(setup: Setup) -> dict[str, float]:
    out = train(setup, "offline-ifd", score={"reference_ifd": {"type": "ifd", "model": str(setup.reference)}},
                select={"strategy": "superfilter", "score": "mean(reference_ifd)", "budget": setup.args.budget})
    return result(setup, out, selected_noise(setup, out))


def offline_rho(setup: Setup) -> dict[str, float]:
    out = train(setup, "offline-rho", score={"initial_loss": {"type": "loss"}, **reference_loss(setup)}, select={
        "strategy": "top_k", "score": "initial_loss - reference_loss", "budget": setup.args.budget})
    return result(setup, out, selected_noise(setup, out))


def online_ifd(setup: Setup) -> dict:
    out = train(setup, "online-ifd", online={
        "every": "epoch", "scorer": {"type": "ifd"},
        "select": {"strategy": "top_k", "score": "score", "budget": setup.args.budget}})
    return online_result(setup, out)


def online_rho(setup: Setup) -> dict:
    out = train(setup, "online-rho", score=reference_loss(setup), online={
        "every": "epoch", "scorer": {"type": "loss"},
        "select": {"strategy": "top_k", "score": "score - reference_loss", "budget": setup.args.budget}})
    return online_result(setup, out)


@contextmanager
def kept_noise() -> Iterator[list[bool]]:
    """Per-batch selection keeps no record of the rows it trains: while this is open, each row
    `BatchSelectingSFTTrainer.keep_top` keeps is read back as text and listed as noise when its answer is not its
    letters reversed."""
    flags: list[bool] = []
    keep_top = BatchSelectingSFTTrainer.keep_top

    def recording(trainer: BatchSelectingSFTTrainer, batch: dict) -> dict:
        kept = keep_top(trainer, batch)
        for text in trainer.processing_class.batch_decode(kept["input_ids"], skip_special_tokens=True):
            instruction, answer = text.split("\n", 1)
            flags.append(answer.split() != instruction.removeprefix("reverse: ").split()[::-1])
        return kept

    BatchSelectingSFTTrainer.keep_top = recording
    try:
        yield flags
    finally:
        BatchSelectingSFTTrainer.keep_top = keep_top


def per_batch(setup: Setup, name: str, **sections: dict) -> dict[str, float]:
    """A per-batch selection run (`online.every: batch`): the noise share of the rows its steps kept."""
    with kept_noise() as flags:
        out = train(setup, name, **sections)
    return result(setup, out, float(np.mean(flags)))


def per_batch_loss(setup: Setup) -> dict[str, float]:
    return per_batch(setup, "batch-loss", online={"every": "batch", "batch_ratio": setup.args.batch_ratio})


def per_batch_rho(setup: Setup) -> dict[str, float]:
    return per_batch(setup, "batch-rho", score=reference_loss(setup), online={
        "every": "batch", "batch_ratio": setup.args.batch_ratio, "batch_reference": "mean(reference_loss)"})


def weighted(setup: Setup) -> dict[str, float]:
    out = train(setup, "weights", score=reference_loss(setup), sft={"sample_weight": WEIGHT})
    weights = sample_scores(load_from_disk(str(out / "scored")), WEIGHT)
    noisy = [i in setup.noisy for i in range(len(weights))]
    return result(setup, out, float(weights[noisy].sum() / weights.sum()))


VARIANTS: dict[str, Callable[[Setup], dict]] = {
    "reference model alone": reference_alone,
    "full": full,
    "random": random_subset,
    "offline IFD (superfilter)": offline_ifd,
    "offline RHO-LOSS": offline_rho,
    "online IFD (top_k)": online_ifd,
    "online RHO-LOSS": online_rho,
    "per-batch loss": per_batch_loss,
    "per-batch RHO-LOSS": per_batch_rho,
    "weights exp(-reference_loss)": weighted,
}


def prepare(folder: Path, seed: int, args: argparse.Namespace) -> Setup:
    """The seed's data, initial weights and reference model (the initial weights trained on the reference set)."""
    folder.mkdir(parents=True)
    noisy = write_data(folder, seed, args)
    config = TinyModelConfig(hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
                             seed=seed)
    model = build_tiny_model(folder / "initial", config)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = PLAIN_TEMPLATE
    tokenizer.save_pretrained(model)
    setup = Setup(folder, seed, model, folder / "reference" / "sft", noisy, args)
    path = recipe(setup, "reference", args.reference_steps, data="reference.jsonl")
    assert deita_train(["run", str(path)]) == 0, f"reference model failed (seed {seed})"
    return setup


def spread(values: np.ndarray) -> float:
    """Sample standard deviation over the seeds (0 for one seed)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--pool", type=int, default=1000, help="pool rows")
    parser.add_argument("--noise", type=float, default=0.3, help="share of pool rows with another row's answer")
    parser.add_argument("--budget", type=int, default=480, help="rows of every subset (per round, online)")
    parser.add_argument("--steps", type=int, default=360, help="optimizer steps of every variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-ratio", type=int, default=4, help="per-batch selection: rows drawn per row trained")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--reference-rows", type=int, default=200, help="clean rows the reference model trains on")
    parser.add_argument("--reference-steps", type=int, default=360, help="the same as --steps by default")
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64, help="tiny model width (intermediate: twice this)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tiny model gains nothing from more)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", type=Path, help="write the per-seed results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            setup = prepare(Path(tmp) / f"seed-{seed}", seed, args)
            for name in args.variants:
                results[name].append({"seed": seed, **VARIANTS[name](setup)})
    minutes = (time.perf_counter() - start) / 60
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "minutes": minutes,
                                         "results": results}, indent=2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; tiny Llama "
          f"{args.layers} layers x {args.hidden}; pool {args.pool} ({args.noise:.0%} noise), budget {args.budget}, "
          f"{args.steps} steps x {args.batch_size}, lr {args.learning_rate}; reference: {args.reference_rows} clean "
          f"rows, {args.reference_steps} steps; seeds {args.seeds}; {minutes:.1f} min")
    baselines = [name for name in ("full", "reference model alone") if name in results]
    header = ["variant", "held-out loss: mean ± sd (min-max)", "noise trained on: mean ± sd (min-max)",
              *(f"seeds with a lower loss than {name}" for name in baselines)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, runs in results.items():
        loss, noise = (np.array([run[key] for run in runs]) for key in ("eval_loss", "noise_trained"))
        lower = [sum(run["eval_loss"] < other["eval_loss"] for run, other in zip(runs, results[baseline], strict=True))
                 for baseline in baselines]
        cells = [name, f"{loss.mean():.3f} ± {spread(loss):.3f} ({loss.min():.3f}-{loss.max():.3f})",
                 f"{noise.mean():.1%} ± {spread(noise):.1%} ({noise.min():.1%}-{noise.max():.1%})",
                 *(f"{n}/{len(runs)}" for n in lower)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
