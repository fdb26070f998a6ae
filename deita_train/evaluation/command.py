"""`deita-train eval RECIPE_OR_MODEL`: MT-Bench answers and judged scores for a trained model.

Given a recipe, the model is the recipe's last training output (`<output_dir>/dpo` when it has a dpo stage,
else `<output_dir>/sft`) and the results go to `<output_dir>/eval/mt_bench/`; given a model folder, `--out`
is required.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deita_train.evaluation.judge import JudgeConfig


def add_eval_command(subparsers) -> argparse.ArgumentParser:
    """Add `eval` to the CLI's subparsers; `eval_command(args)` runs it."""
    command = subparsers.add_parser("eval", help="answer MT-Bench with a trained model and judge the answers")
    command.add_argument("target", help="a recipe YAML (evaluates its sft/dpo output) or a model folder")
    command.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. output_dir=out")
    command.add_argument("--out", type=Path, help="output folder (default for a recipe: <output_dir>/eval/mt_bench)")
    command.add_argument("--judge-base-url", help="OpenAI-compatible API root, e.g. http://localhost:8000/v1")
    command.add_argument("--judge-model", help="judge model name, e.g. gpt-4")
    command.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                         help="environment variable with the judge API key; 'none' for a keyless server")
    command.add_argument("--num-questions", type=int, help="answer the first N questions (default: all 80)")
    command.add_argument("--max-new-tokens", type=int, default=1024)
    command.add_argument("--batch-size", type=int, default=8)
    command.add_argument("--chat-template", default="model", help="vicuna_v1.1, chatml or model (the tokenizer's)")
    command.set_defaults(handler=eval_command)
    return command


def eval_command(args: argparse.Namespace) -> int:
    """Resolve the model and output folder, run `run_eval`, print the summary; exit code 0 (2: bad recipe)."""
    from deita_train.evaluation.run import run_eval

    if (args.judge_base_url is None) != (args.judge_model is None):
        raise SystemExit("eval: give both --judge-base-url and --judge-model, or neither (no judging)")
    judge = None
    if args.judge_base_url is not None:
        key_env = None if args.judge_api_key_env.lower() == "none" else args.judge_api_key_env
        judge = JudgeConfig(base_url=args.judge_base_url, model=args.judge_model, api_key_env=key_env)
    target = Path(args.target)
    if target.suffix in (".yaml", ".yml"):
        from deita_train.recipe.errors import RecipeError
        from deita_train.sections import load_recipe

        try:
            recipe = load_recipe(target, args.overrides)
        except RecipeError as error:
            print(f"{target}: {len(error.problems)} problem(s):", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        model_path = recipe.output_dir / ("dpo" if recipe.dpo is not None else "sft")
        out = args.out or recipe.output_dir / "eval" / "mt_bench"
    else:
        if args.overrides:
            raise SystemExit(f"eval: overrides {args.overrides} apply to recipes only; {target} is a model folder")
        if args.out is None:
            raise SystemExit("eval: --out is required when evaluating a model folder")
        model_path, out = target, args.out
    if not (model_path / "config.json").is_file():
        raise SystemExit(f"eval: no model at {model_path} (no config.json); train it first (deita-train train)")
    summary = run_eval(model_path, out, judge, num_questions=args.num_questions, max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, chat_template=args.chat_template)
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")
    return 0
