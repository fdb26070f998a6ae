"""`deita-train COMMAND ...`: a table of commands, each a short function; `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from deita_train.evaluation.command import add_eval_command
from deita_train.recipe.errors import RecipeError

STAGE_COMMANDS = {"score": ["score"], "select": ["select"], "train": ["sft", "dpo"], "run": None}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="deita-train", description="Data selection + TRL training from one recipe.")
    commands = top.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "run every stage the recipe declares"),
        ("score", "score the pool (writes scored/)"),
        ("select", "select from scored/ or the pool (writes selected/, selection.json)"),
        ("train", "run the sft and dpo stages the recipe declares"),
        ("validate", "check the recipe and print it resolved; loads no model"),
    ]:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("recipe", type=Path)
        command.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. select.budget=6000"
        )
    add_eval_command(commands)
    tiny = commands.add_parser("tiny-model", help="build a small random Llama and BPE tokenizer, offline")
    tiny.add_argument("out_dir", type=Path)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "eval":
        return args.handler(args)
    if args.command == "tiny-model":
        from deita_train.training.tiny_model import build_tiny_model

        print(f"tiny model written to {build_tiny_model(args.out_dir)}")
        return 0
    from deita_train.recipe.loading import load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as error:
        print(f"{args.recipe}: {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(yaml.safe_dump(recipe.raw, sort_keys=False), end="")
        print(f"# ok: stages {', '.join(recipe.stages) or 'none'}", file=sys.stderr)
        return 0
    from accelerate import PartialState

    from deita_train.pipeline import run

    job = run(recipe, STAGE_COMMANDS[args.command])
    state = PartialState()
    if state.is_main_process:
        print_outputs(job.out)
    state.destroy_process_group()  # a gloo/NCCL group still alive at interpreter exit can abort the process
    return 0


def print_outputs(out: Path) -> None:
    """Say where everything was written."""
    for name in ("scored", "selected", "selection.json", "online", "sft", "dpo", "report"):
        if (out / name).exists():
            print(f"{name:>15}: {out / name}")


def run_recipe_main() -> int:
    """`python -m deita_train RECIPE [KEY=VALUE ...]` is `deita-train run RECIPE ...`."""
    argv = sys.argv[1:]
    known = {"run", "score", "select", "train", "validate", "eval", "tiny-model", "-h", "--help"}
    return main(argv if argv and argv[0] in known else ["run", *argv])
