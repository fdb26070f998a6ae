"""Recipe strictness: unknown keys with suggestions, types, TRL fields, missing files, overrides, extends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deita_train.cli.main import main
from deita_train.recipe.errors import RecipeError
from deita_train.sections import load_recipe

from .conftest import QUICKSTART_DATA, REPO

POOL = str(QUICKSTART_DATA / "alpaca_cleaned_400.jsonl")


def write(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def base(tiny_model, tmp_path) -> dict:
    return {
        "output_dir": str(tmp_path / "out"),
        "model": {"name_or_path": str(tiny_model)},
        "pool": [{"path": POOL, "format": "alpaca"}],
        "score": {"length": {"type": "length"}},
        "select": {"strategy": "top_k", "score": "length", "budget": 10},
        "sft": {"learning_rate": 1e-4, "num_train_epochs": 1},
    }


def problems_of(tmp_path, data) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path, data))
    return caught.value.problems


def test_valid_recipe_loads_typed(tmp_path, base):
    recipe = load_recipe(write(tmp_path, base))
    assert recipe.stages == ["score", "select", "sft"]
    assert recipe.select.options.budget == 10 and recipe.sft.args["learning_rate"] == 1e-4


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.update(slect={}), "slect: unknown section; did you mean 'select'?"),
        (lambda r: r["model"].update(name_or_pth="x"), "model.name_or_pth: unknown key; did you mean 'name_or_path'?"),
        (lambda r: r["select"].update(budgett=5), "select.budgett: unknown key; did you mean 'budget'?"),
        (lambda r: r["score"]["length"].update(type="lenght"), "score.length.type: unknown scorer 'lenght'; did you mean 'length'?"),
        (lambda r: r["sft"].update(max_seq_length=512), "sft.max_seq_length: not a field of trl.SFTConfig"),
        (lambda r: r["sft"].update(learning_rat=1.0), "sft.learning_rat: not a field of trl.SFTConfig"),
        (lambda r: r["sft"].update(num_train_epochs="many"), "sft.num_train_epochs: expected float"),
        (lambda r: r["select"].update(budget="ten"), "select.budget: expected int or null"),
        (lambda r: r["model"].update(dtype="fp8"), "model.dtype: expected one of"),
        (lambda r: r["pool"][0].update(path=str(Path(POOL).with_name("missing.jsonl"))), "pool.0.path: file not found"),
        (lambda r: r["model"].update(name_or_path="./no/such/model"), "model.name_or_path: model folder not found"),
        (lambda r: r.pop("model"), "model: required by the sft stage"),
        (lambda r: r["pool"][0].update(limit=3, fraction=0.5), "pool.0: set one of limit, sample, fraction"),
    ],
)
def test_each_problem_names_its_key(tmp_path, base, edit, expected):
    edit(base)
    assert any(p.startswith(expected) for p in problems_of(tmp_path, base)), expected


def test_removed_trl_key_suggests_its_replacement(tmp_path, base):
    base["sft"]["max_seq_length"] = 512
    (problem,) = problems_of(tmp_path, base)
    assert "did you mean 'max_length'?" in problem


def test_all_problems_are_reported_at_once(tmp_path, base):
    base["sft"]["max_seq_length"] = 512
    base["select"]["budgett"] = 5
    base["model"]["dtype"] = "fp8"
    assert len(problems_of(tmp_path, base)) == 3


def test_yaml_exponent_learning_rate_is_a_float(tmp_path, base):
    path = write(tmp_path, base)
    path.write_text(path.read_text().replace("learning_rate: 0.0001", "learning_rate: 2e-5"))
    assert load_recipe(path).sft.args["learning_rate"] == 2e-5


def test_overrides_are_dotted_and_typed(tmp_path, base):
    recipe = load_recipe(write(tmp_path, base), ["select.budget=6000", "pool.0.limit=7", "sft.bf16=false", "seed=3"])
    assert recipe.select.options.budget == 6000 and recipe.pool[0].limit == 7
    assert recipe.sft.args["bf16"] is False and recipe.seed == 3
    with pytest.raises(RecipeError, match="select.budget: expected int"):
        load_recipe(write(tmp_path, base), ["select.budget=lots"])
    with pytest.raises(RecipeError, match="overrides are KEY=VALUE"):
        load_recipe(write(tmp_path, base), ["select.budget"])
    with pytest.raises(RecipeError, match="~dpo: no key .dpo. to remove"):
        load_recipe(write(tmp_path, {k: v for k, v in base.items() if k != "sft"}), ["~dpo"])
    assert load_recipe(write(tmp_path, base), ["~sft"]).sft is None
    with pytest.raises(RecipeError, match="pool.5.limit: pool.5 is not an index of a list of 1"):
        load_recipe(write(tmp_path, base), ["pool.5.limit=1"])


def test_extends_merges_mappings_and_replaces_the_rest(tmp_path, base):
    write(tmp_path, base, "base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "select": {"budget": 3}, "sft": {"learning_rate": 5e-5}}, "child.yaml")
    recipe = load_recipe(child)
    assert recipe.select.options.budget == 3 and recipe.select.options.score == "length"
    assert recipe.sft.args == {"learning_rate": 5e-5, "num_train_epochs": 1}
    with pytest.raises(RecipeError, match="extends: base recipe not found"):
        load_recipe(write(tmp_path, {"extends": "nope.yaml"}, "orphan.yaml"))


def test_validate_command_exit_codes(tmp_path, base, capsys):
    assert main(["validate", str(write(tmp_path, base))]) == 0
    assert "name_or_path" in capsys.readouterr().out
    base["sft"]["max_seq_length"] = 512
    assert main(["validate", str(write(tmp_path, base))]) == 2
    assert "sft.max_seq_length" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2


def test_console_script_names_misspelled_key_before_loading_a_model(tmp_path, base):
    base["model"]["name_or_path"] = str(tmp_path)  # an empty folder: loading it would fail differently
    (tmp_path / "config.json").write_text("{}")
    base["select"]["thresold"] = 0.9
    done = subprocess.run([sys.executable, "-m", "deita_train", "validate", str(write(tmp_path, base))],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert "select.thresold: unknown key" in done.stderr


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_recipes_validate(recipe, tiny_model, monkeypatch):
    """Every shipped recipe is well-formed (hub models are not looked up: online, a hub id is not checked)."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_recipe(recipe)
