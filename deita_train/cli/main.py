"""`deita-train COMMAND ...`: a table of commands, each a short function; `main(argv) -> exit code`.

Exit codes: 0 done; 2 an error of the user's making (`UserError`: its message alone, no traceback); 130 Ctrl-C;
1 anything else, with its traceback. `--debug` shows the traceback of user errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from deita_train.cli.listing import KINDS
from deita_train.errors import UserError
from deita_train.evaluation.command import add_eval_command
from deita_train.recipe.errors import RecipeError

STAGE_COMMANDS = {"synth": ["synth"], "score": ["score"], "select": ["select"], "train": ["sft", "dpo"], "run": None}
RECIPE_HELP = "a recipe YAML, e.g. recipes/quickstart/tiny-cpu.yaml"
OVERRIDES_HELP = "dotted overrides applied to the recipe, e.g. select.budget=6000 pool.0.limit=100"
EPILOG = """\
RECIPE is a recipe YAML (e.g. recipes/quickstart/tiny-cpu.yaml); KEY=VALUE are dotted overrides
(select.budget=6000). `deita-train COMMAND --help` lists a command's flags."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="deita-train", description="Data selection + TRL training from one recipe.",
                                  epilog=EPILOG, formatter_class=command_table)
    top.add_argument("--version", action="version", version=f"deita-train {version('deita-train')}")
    top.add_argument("--debug", action="store_true",
                     help="show the traceback of user errors and Ctrl-C (also accepted after the command)")
    commands = top.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name, help_text in [
        ("run", "run every stage the recipe declares"),
        ("synth", "Magpie: generate, tag and pair data (writes synth/)"),
        ("score", "score the pool (writes scored/)"),
        ("select", "select from scored/ or the pool (writes selected/)"),
        ("train", "run the recipe's sft and dpo stages"),
        ("validate", "check the recipe and print it resolved; loads no model"),
    ]:
        command = recipe_command(commands, name, help_text)
        if name != "validate":
            command.add_argument("--force", action="store_true",
                                 help="re-run the stages even when their outputs are up to date")
    add_eval_command(commands)
    preview = recipe_command(commands, "preview", "show training rows, trained tokens marked; loads no model")
    preview.add_argument("--rows", type=int, default=3, metavar="N", help="rows to show (default: 3)")
    preview.add_argument("--stage", choices=("sft", "dpo"), default="sft",
                         help="sft: rendered conversations, assistant mask; dpo: prompt, chosen, rejected")
    listing = commands.add_parser("list", help="scorers, strategies, callbacks, templates, with their options",
                                  description="Every registered name with its options: name, type, default, help.")
    listing.add_argument("kind", nargs="?", choices=KINDS, help="what to list (default: all four)")
    report = commands.add_parser("report", help="write report/index.html and summary.md for a run's output_dir")
    report.add_argument("output_dir", type=Path, help="the output_dir of a run (e.g. outputs/quickstart)")
    tiny = commands.add_parser("tiny-model", help="build a small random Llama and BPE tokenizer, offline")
    tiny.add_argument("out_dir", type=Path)
    return top


def command_table(prog: str) -> argparse.HelpFormatter:
    """The top-level help: one line per command (argparse sizes its first column without the commands' indent, so
    `tiny-model` would wrap)."""
    formatter = argparse.RawDescriptionHelpFormatter(prog)
    formatter._action_max_length = len("    tiny-model")
    return formatter


def recipe_command(commands: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command taking `RECIPE [KEY=VALUE ...]`."""
    command = commands.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.")
    command.add_argument("recipe", type=Path, metavar="RECIPE", help=RECIPE_HELP)
    command.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    return command


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
    if args.command == "list":
        from deita_train.cli.listing import list_command

        return list_command(args.kind)
    if args.command == "report":
        from deita_train.report.command import render_report

        print(f"report written to {render_report(args.output_dir)}")
        return 0
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
    if args.command == "preview":
        from deita_train.cli.preview import preview_command

        return preview_command(recipe, args.stage, args.rows)
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
    known = {"run", "synth", "score", "select", "train", "validate", "eval", "preview", "list", "report",
             "tiny-model", "-h", "--help", "--version"}
    first = next((arg for arg in argv if arg != "--debug"), None)
    return main(argv if first in known else ["run", *argv])
