"""A discoverable CLI: `--version`, `list` (every option from the config dataclasses), help texts, and `preview`
marking exactly the tokens TRL trains on."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from deita_train.cli import preview
from deita_train.cli.listing import NAME_FIELDS
from deita_train.cli.main import main
from deita_train.scoring.config import SCORER_CONFIGS
from deita_train.selection.config import STRATEGY_CONFIGS

from .conftest import REPO

QUICKSTART = "recipes/quickstart/tiny-cpu.yaml"
TRAINED_SPAN = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's --help and --version
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert (code, out) == (0, f"deita-train {version('deita-train')}\n")


def registered(kind: str) -> dict[str, type]:
    """Name -> config dataclass, read from the registries themselves."""
    if kind == "callbacks":
        from deita_train.callbacks import CALLBACKS

        return {name: CALLBACKS.get(name, kind).config_class for name in CALLBACKS.names()}
    registry = {"scorers": SCORER_CONFIGS, "strategies": STRATEGY_CONFIGS}[kind]
    return {name: registry.get(name, kind) for name in registry.names()}


@pytest.mark.parametrize("kind", ["scorers", "strategies", "callbacks"])
def test_list_shows_every_option_of_every_registered_config(capsys, kind):
    code, out, _ = run_main(capsys, "list", kind)
    assert code == 0
    entries = {block.split()[0]: block for block in out.split("\n\n")[1:]}  # after the kind's heading
    configs = registered(kind)
    assert sorted(entries) == sorted(configs)
    for name, config in configs.items():
        lines = entries[name].splitlines()
        assert lines[0] == f"{name}  ({config.__name__})"
        for option in dataclasses.fields(config):
            if not option.init or option.name == NAME_FIELDS.get(kind):
                continue
            line = next((line for line in lines if line.startswith(f"  {option.name}: ")), None)
            assert line is not None, f"{name}: option {option.name} not listed"
            if option.default is not dataclasses.MISSING:
                default = f" = {option.default!r}  "
            else:
                default = f" = {option.default_factory()!r}  " if option.default_factory is not dataclasses.MISSING else " (required)"
            assert default in line and option.metadata["help"] in line, line


def test_list_renders_types_for_a_reader(capsys):
    out = run_main(capsys, "list", "scorers")[1] + run_main(capsys, "list", "strategies")[1]
    assert "  max_batch_size: int | None = None  " in out
    assert "  dtype: 'auto' | 'float32' | 'bfloat16' | 'float16' = 'auto'  " in out
    assert "  metric: 'euclidean' | 'cosine' = 'euclidean'  " in out


def test_list_with_no_kind_lists_all_four(capsys):
    code, out, _ = run_main(capsys, "list")
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("== ")] == [
        "== scorers  (score: {COLUMN: {type: NAME, ...options}})",
        "== strategies  (select: {strategy: NAME, ...options})",
        "== callbacks  (callbacks: [{name: NAME, ...options}])",
        "== chat templates  (model.chat_template; they mark assistant turns for assistant-only loss)",
        "== pre-query templates (synth)  (synth.pre_query_template: auto, a name below, or the template text)",
    ]
    assert "score_logger  (ScoreLoggerConfig)\n  columns: list[str] | None = None  Score columns" in out
    assert "  judge: JudgeConfig | None = None  " in out
    assert "\n  vicuna_v1.1\n" in out and "\n  model  (the tokenizer's own template)\n" in out
    assert "== pre-query templates (synth)" in out and "\n  qwen2: '<|im_start|>user\\n'\n" in out


def test_list_of_the_light_registries_imports_no_heavy_library():
    script = ("import sys\nfrom deita_train.cli.main import main\n"
              "assert all(main(['list', kind]) == 0 for kind in ('scorers', 'strategies', 'templates'))\n"
              "print(sorted({'torch', 'transformers', 'trl', 'datasets'} & sys.modules.keys()))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_each_command_on_one_line_and_says_what_recipe_is(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for command in ("run", "synth", "score", "select", "train", "validate", "eval", "preview", "list", "tiny-model"):
        assert re.search(rf"^    {re.escape(command)} +\S", out, re.MULTILINE), f"{command} not on one line"
    assert "RECIPE is a recipe YAML" in out
    for command in ("run", "score", "validate", "preview"):
        _, out, _ = run_main(capsys, command, "--help")
        assert "RECIPE" in out and "recipes/quickstart/tiny-cpu.yaml" in out and "KEY=VALUE" in out
    _, out, _ = run_main(capsys, "preview", "--help")
    assert "--rows N" in out and "--stage {sft,dpo}" in out


@pytest.fixture
def quickstart(tiny_model, tmp_path, monkeypatch) -> list[str]:
    monkeypatch.chdir(REPO)
    return ["preview", QUICKSTART, f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'out'}"]


@pytest.fixture
def tokenizer(tiny_model):
    from deita_train.data.chat_templates import apply_chat_template
    from deita_train.training.models import load_tokenizer

    return apply_chat_template(load_tokenizer(str(tiny_model)), "vicuna_v1.1")


def first_rows(n: int) -> list[list[dict[str, str]]]:
    from deita_train.data.sources import load_sources
    from deita_train.sections import load_recipe

    recipe = load_recipe(REPO / QUICKSTART)
    return load_sources(recipe.pool, recipe.seed)[0].select(range(n))["messages"]


def spans(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """The decoded runs of trained tokens."""
    runs, run = [], []
    for token, bit in zip(ids, mask, strict=True):
        if bit:
            run.append(token)
        elif run:
            runs, run = [*runs, run], []
    return [tokenizer.decode(r, clean_up_tokenization_spaces=False) for r in [*runs, run] if r]


def test_preview_marks_the_assistant_mask_of_the_chat_template(capsys, quickstart, tokenizer):
    code, out, _ = run_main(capsys, *quickstart)
    assert code == 0
    assert "the pool's sources" in out and "selected does not exist yet" in out
    rows = out.split("\n--- row id ")[1:]
    assert len(rows) == 3
    for messages, shown in zip(first_rows(3), rows, strict=True):
        encoded = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True,
                                                tokenize=True)
        ids, mask = encoded["input_ids"][:384], encoded["assistant_masks"][:384]  # the recipe's sft.max_length
        assert TRAINED_SPAN.findall(shown) == spans(tokenizer, ids, mask)
        assert f"trained tokens: {sum(mask)} of {len(ids)}" in shown
        assert "USER: " in TRAINED_SPAN.sub("", shown)  # the prompt is shown, unmarked


def test_preview_marks_exactly_the_labels_of_trl_sft_trainer(tiny_model, tmp_path, tokenizer):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from deita_train.training.sft import SFT_DEFAULTS

    conversations = first_rows(4)
    args = SFTConfig(output_dir=str(tmp_path), **(SFT_DEFAULTS | {"max_length": 96, "use_cpu": True}))
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"messages": conversations}))
    prepared = {tuple(row["input_ids"]): row["labels"] for row in trainer.train_dataset}
    marked = [preview.sft_marked(tokenizer, messages, True, 96, "keep_start") for messages in conversations]
    kept = [m for m in marked if any(m.trained)]  # TRL drops a row left with no trained token (the 4th: a long prompt)
    assert len(kept) == len(prepared) == 3 and any(m.cut for m in kept)
    for m in kept:
        assert m.trained == [label != -100 for label in prepared[tuple(m.ids)]]
        assert not all(m.trained)


def test_preview_reads_selected_when_the_recipe_selected(capsys, quickstart, tmp_path):
    from datasets import Dataset

    messages = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."}]
    Dataset.from_dict({"id": [7], "messages": [messages]}).save_to_disk(str(tmp_path / "out" / "selected"))
    code, out, _ = run_main(capsys, *quickstart, "--rows", "5")
    assert code == 0
    assert f"the first 1 of 1 rows of {tmp_path / 'out' / 'selected'}" in out
    assert TRAINED_SPAN.findall(out.split("\n--- row id 7 ---\n")[1]) == [" Seven.</s>"]


def test_preview_dpo_shows_prompt_chosen_and_rejected(capsys, quickstart):
    code, out, _ = run_main(capsys, *quickstart, "--stage", "dpo", "--rows", "2")
    assert code == 0
    pairs = out.split("\n--- pair id ")[1:]
    assert len(pairs) == 2
    for pair in pairs:
        prompt, rest = pair.split("\nprompt:\n")[1].split("\nchosen:\n")
        chosen, rejected = rest.split("\nrejected:\n")
        assert "USER: " in prompt and "[[" not in prompt and prompt.rstrip().endswith("ASSISTANT:")
        assert chosen.startswith("[[") and rejected.startswith("[[")
        assert re.search(r"trained tokens: chosen \d+ of \d+.*; rejected \d+ of \d+", rejected)
    assert "Angela" in pairs[0]  # the first pair's prompt


def test_preview_colors_on_a_terminal(tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Yo."}],
                                        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = preview.Marked(ids["input_ids"], [bool(bit) for bit in ids["assistant_masks"]])
    text = preview.render(tokenizer, marked, color=True)
    assert "[[" not in text and f"{preview.TRAINED} Yo.</s>{preview.RESET}" in text
    assert text.startswith(f"{preview.CONTEXT}<s>A chat")


def test_preview_of_a_stage_the_recipe_lacks(capsys, quickstart):
    code, _, err = run_main(capsys, *quickstart, "~dpo", "--stage", "dpo")
    assert code == 2 and "dpo: the recipe has no dpo section" in err
