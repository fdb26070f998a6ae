"""`deita-train COMMAND ...`: a table of commands, each a short function; `main(argv) -> exit code`.

Exit codes: 0 done; 2 an error of the user's making (`UserError`: its message alone, no traceback); 130 Ctrl-C;
1 anything else, with its traceback. `--debug` shows the traceback of user errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from deita_train.errors import UserError
from deita_train.evaluation.command import add_eval_command
from deita_train.recipe.errors import RecipeError

STAGE_COMMANDS = {"synth": ["synth"], "score": ["score"], "select": ["select"], "train": ["sft", "dpo"], "run": None}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="deita-train", description="Data selection + TRL training from one recipe.")
    top.add_argument("--debug", action="store_true",
                     help="show the traceback of user errors and Ctrl-C (also accepted after the command)")
    commands = top.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "run every stage the recipe declares"),
        ("synth", "generate instructions, answers, tags and DPO pairs with Magpie (writes synth/)"),
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
        if name != "validate":
            command.add_argument("--force", action="store_true",
                                 help="re-run the stages even when their outputs are up to date")
    add_eval_command(commands)
    tiny = commands.add_parser("tiny-model", help="build a small random Llama and BPE tokenizer, offline")
    tiny.add_argument("out_dir", type=Path)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv  # before the command or anywhere after it
    args = parser().parse_args([arg for arg in argv if arg != "--debug"])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return dispatch(args)
    except UserError as error:
        if debug:
            raise
        print(user_message(error, getattr(args, "recipe", None)), file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # a `ScoringInterrupted` says how many shards are kept
        if debug:
            raise
        print(f"interrupted{': ' if str(interrupt) else ''}{interrupt}; re-run the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        close_process_group()


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code."""
    if args.command == "eval":
        return args.handler(args)
    if args.command == "tiny-model":
        from deita_train.training.tiny_model import build_tiny_model

        print(f"tiny model written to {build_tiny_model(args.out_dir)}")
        return 0
    from deita_train.sections import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.command == "validate":
        print(yaml.safe_dump(recipe.raw, sort_keys=False), end="")
        print(f"# ok: stages {', '.join(recipe.stages) or 'none'}", file=sys.stderr)
        return 0
    from accelerate import PartialState

    from deita_train.pipeline import run

    invocation = " ".join([str(args.recipe), *args.overrides])
    job = run(recipe, STAGE_COMMANDS[args.command], force=args.force, invocation=invocation)
    if PartialState().is_main_process:
        print_outputs(job.out)
    return 0


def user_message(error: UserError, recipe: Path | None) -> str:
    """A `RecipeError` as `RECIPE: N problem(s):` and one indented line per problem, any other its `str()`;
    then its notes (the engine notes which shard it was scoring)."""
    if isinstance(error, RecipeError):
        lines = [f"{recipe or 'recipe'}: {len(error.problems)} problem(s):", *(f"  {p}" for p in error.problems)]
    else:
        lines = [str(error) or type(error).__name__]
    return "\n".join([*lines, *getattr(error, "__notes__", [])])


def close_process_group() -> None:
    """Destroy the gloo/NCCL group if this process joined one: one alive at interpreter exit can abort the process."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def print_outputs(out: Path) -> None:
    """Say where everything was written."""
    for name in ("synth", "scored", "selected", "selection.json", "online", "sft", "dpo", "report", "manifests"):
        if (out / name).exists():
            print(f"{name:>15}: {out / name}")


def run_recipe_main() -> int:
    """`python -m deita_train RECIPE [KEY=VALUE ...]` is `deita-train run RECIPE ...`."""
    argv = sys.argv[1:]
    known = {"run", "synth", "score", "select", "train", "validate", "eval", "tiny-model", "-h", "--help"}
    first = next((arg for arg in argv if arg != "--debug"), None)
    return main(argv if first in known else ["run", *argv])
