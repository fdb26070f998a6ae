"""`report/index.html` and `summary.md` from a run's outputs: every section that applies, numbers that match an
independent computation, the run record's fields, and the page in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr

from deita_train.cli.main import main
from deita_train.report.outputs import NotAnOutputDir, RunOutputs
from deita_train.report.sections import agreement, sample_scores, scores

from .conftest import QUICKSTART_DATA

ROWS = 60


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory, tiny_model) -> Path:
    """score (length) -> select (deita over precomputed quality/complexity and a 16-d embedding) on 60 real rows;
    4 rows have no quality."""
    folder = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    lines = (QUICKSTART_DATA / "alpaca_cleaned_400.jsonl").read_text().splitlines()[:ROWS]
    records = []
    for i, line in enumerate(lines):
        record = json.loads(line)
        vector = rng.normal(size=16)
        record |= {"quality": None if i % 15 == 3 else float(rng.uniform(1, 6)), "complexity": float(rng.uniform(1, 6)),
                   "vec": (vector / np.linalg.norm(vector)).tolist()}
        records.append(record)
    (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = {
        "output_dir": str(folder / "out"), "model": {"name_or_path": str(tiny_model)},
        "pool": [{"path": str(folder / "pool.jsonl"), "format": "alpaca"}],
        "score": {"length": {"type": "length"}},
        "select": {"strategy": "deita", "score": "quality * complexity", "embedding": "vec", "threshold": 0.5,
                   "budget": 20},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(folder / "recipe.yaml")]) == 0
    return folder / "out"


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def test_every_section_that_applies_is_there(selected_run):
    page = (selected_run / "report" / "index.html").read_text()
    assert section_ids(page) == ["overview", "pool", "scores", "agreement", "selection", "coverage", "examples",
                                 "recipe"]
    assert page.count("data:image/png;base64,") == 3 + 1 + 1 + 1  # 3 histograms, heat map, funnel, coverage
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline, as it is
    summary = (selected_run / "report" / "summary.md").read_text()
    assert [line for line in summary.splitlines() if line.startswith("## ")] == [
        "## Run", "## Pool", "## Scores", "## Agreement between scorers", "## Selection", "## Coverage",
        "## Examples", "## Recipe (resolved)"]


def test_score_counts_and_correlations_match_an_independent_computation(selected_run):
    outputs = RunOutputs.read(selected_run)
    section = scores(outputs)
    table = next(content for kind, content in section.blocks if kind == "table")
    rows = {row[0]: row for row in table[1]}
    assert rows["quality"][2:4] == [56, 4]  # scored, unscored: 4 rows have no quality
    assert rows["length"][1] == "length" and rows["length"][2:4] == [ROWS, 0]
    heat = next(content for kind, content in agreement(outputs).blocks if kind == "table")
    names = heat[0][1:]
    values = {name: sample_scores(outputs, name) for name in names}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            both = ~np.isnan(values[a]) & ~np.isnan(values[b])
            expected = spearmanr(values[a][both], values[b][both]).statistic
            assert heat[1][i][1 + j] == pytest.approx(expected, abs=1e-9)


def test_the_selection_section_walks_the_funnel(selected_run):
    summary = (selected_run / "report" / "summary.md").read_text()
    funnel = json.loads((selected_run / "selection.json").read_text())["funnel"]
    assert f"| unscored | {funnel['unscored']['rows']} |" in summary
    assert f"| rejected by diversity | {funnel['rejected_by_diversity']} |" in summary
    assert f"Selected {funnel['selected']} of a budget of 20" in summary


def test_run_record_fields(selected_run):
    record = json.loads((selected_run / "report" / "run.json").read_text())
    assert record["recipe"]["select"]["strategy"] == "deita" and record["processes"] == 1
    assert {"deita-train", "torch", "transformers", "trl", "accelerate", "datasets", "peft", "python"} <= set(
        record["versions"])
    assert record["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["git_commit"])
    assert "cpu" in record["hardware"] or "gpu" in record["hardware"]
    assert all(stage["seconds"] >= 0 for stage in record["stages"].values())


def test_report_command_and_a_folder_that_is_not_a_run(selected_run, tmp_path, capsys):
    (selected_run / "report" / "index.html").unlink()
    assert main(["report", str(selected_run)]) == 0
    assert (selected_run / "report" / "index.html").is_file()
    with pytest.raises(NotAnOutputDir):
        RunOutputs.read(tmp_path)
    assert main(["report", str(tmp_path)]) == 2 and "holds no output of a deita-train run" in capsys.readouterr().err


CHECK = """<script>
addEventListener("load", () => {
  const broken = [...document.images].filter(image => !image.complete || image.naturalWidth === 0).length;
  const shown = [...document.querySelectorAll("section")].filter(s => s.getBoundingClientRect().height > 0).length;
  document.title = `images=${document.images.length} broken=${broken} sections=${shown}`;
});
</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (Debian package `chromium`) installed")
def test_the_page_renders_in_headless_chromium(selected_run, tmp_path):
    """The page as shipped, plus a probe script appended in a copy: every image decodes, every section has a
    height, and the console logs no error."""
    page = (selected_run / "report" / "index.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>"))
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", done.stdout).group(1)
    assert title == f"images=6 broken=0 sections={len(section_ids(page))}"
    assert not [line for line in done.stderr.splitlines() if "CONSOLE" in line and "error" in line.lower()]


def test_the_report_reads_only_numeric_columns(monkeypatch):
    """Text columns are never read whole (a 10M-row text column overflows Arrow's 2 GB string offsets)."""
    from datasets import Dataset

    from deita_train.report import columns

    data = Dataset.from_dict({"id": [0, 1, 2], "text": ["a", "b", "c"], "score": [1.0, None, 3.0],
                              "turns": [[1.0, 2.0], [], None]})
    assert columns.numeric_columns(data) == ["score", "turns"]
    assert list(columns.per_sample(columns.column_array(data, "turns"))[:2]) == [3.0, 0.0]
    assert np.isnan(columns.per_sample(columns.column_array(data, "score"))[1])

