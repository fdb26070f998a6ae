"""The shape DESIGN.md promises: `recipe/` knows sections, not stages; recipe checks stay light."""

from __future__ import annotations

import ast
import subprocess
import sys

from deita_train.scoring.config import SCORER_CONFIGS
from deita_train.scoring.scorers import SCORERS
from deita_train.selection.config import STRATEGY_CONFIGS
from deita_train.selection.strategies import STRATEGIES

from .conftest import QUICKSTART_DATA, REPO

STAGES = ("data", "scoring", "selection", "training", "online", "synth", "callbacks")


def imported_modules(path) -> set[str]:
    """Every module a file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def module_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports, anywhere in its code (function bodies and
    `if TYPE_CHECKING:` blocks too); `from pkg import sub` counts as importing `pkg.sub`, not `pkg`."""
    paths = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (REPO / "deita_train").rglob("*.py")}
    edges = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                children = {f"{node.module}.{alias.name}" for alias in node.names} & paths.keys()
                found |= children | ({node.module} if len(children) < len(node.names) else set())
        edges[name] = found & paths.keys() - {name}
    return edges


def test_no_two_modules_import_each_other():
    edges = module_imports()
    loops = sorted({tuple(sorted((a, b))) for a, found in edges.items() for b in found if a in edges[b]})
    assert not loops, f"modules importing each other: {loops}"


def test_recipe_package_imports_no_stage():
    for path in sorted((REPO / "deita_train" / "recipe").glob("*.py")):
        stages = {name for name in imported_modules(path) if name.split(".")[:2][-1] in STAGES
                  and name.startswith("deita_train.")}
        assert not stages, f"{path.name} imports {sorted(stages)}"


def test_every_scorer_and_strategy_has_its_config_registered_under_the_same_name():
    assert SCORERS.names() == SCORER_CONFIGS.names()
    assert all(SCORERS.get(name, "").config_class is SCORER_CONFIGS.get(name, "") for name in SCORERS.names())
    assert STRATEGIES.names() == STRATEGY_CONFIGS.names()
    assert all(STRATEGIES.get(n, "").config_class is STRATEGY_CONFIGS.get(n, "") for n in STRATEGIES.names())


def test_validating_a_recipe_without_training_imports_no_heavy_library(tmp_path, tiny_model):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
output_dir: {tmp_path / 'out'}
model: {{name_or_path: {tiny_model}}}
pool: [{{path: {QUICKSTART_DATA / 'alpaca_cleaned_400.jsonl'}, format: alpaca}}]
score: {{quality: {{type: deita_quality}}, ifd: {{type: ifd}}, emb: {{type: embedding}}}}
select: {{strategy: deita, score: quality * ifd, embedding: emb, filters: ['len(output) > 3']}}
""")
    script = ("import sys\nfrom deita_train.cli.main import main\n"
              f"assert main(['validate', {str(recipe)!r}]) == 0\n"
              "print(sorted({'torch', 'transformers', 'trl', 'datasets'} & sys.modules.keys()))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
