"""The quickstart recipe end to end: score -> select -> SFT -> DPO on the tiny model, offline, CPU."""

from __future__ import annotations

import json
import math
import re

from datasets import load_from_disk

from deita_train.cli.main import main

from .conftest import REPO


def logged(trainer_state: dict, key: str) -> list[float]:
    return [entry[key] for entry in trainer_state["log_history"] if key in entry]


def test_quickstart_writes_the_contract_and_learns(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "quickstart"
    code = main(["run", "recipes/quickstart/tiny-cpu.yaml", f"output_dir={out}", f"model.name_or_path={tiny_model}"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("scored", "selected", "selection.json", "sft", "dpo", "report"):
        assert (out / name).exists(), name
        assert str(out / name) in printed, f"{name} location not printed"

    scored, selected = load_from_disk(str(out / "scored")), load_from_disk(str(out / "selected"))
    assert len(scored) == 400 and scored["id"] == list(range(400))
    assert len(selected) == 128 and selected.column_names == scored.column_names
    totals = [sum(v) for v in selected["length"]]
    assert totals == sorted(totals, reverse=True)  # top_k by length, in selection order
    assert min(totals) >= sorted((sum(v) for v in scored["length"]), reverse=True)[127]
    selection = json.loads((out / "selection.json").read_text())
    assert selection["strategy"] == "top_k" and selection["counts"]["selected"] == 128

    sft_state = json.loads((out / "sft" / "trainer_state.json").read_text())
    losses = logged(sft_state, "loss")
    assert all(math.isfinite(x) for x in losses) and len(losses) >= 4
    assert losses[-1] < losses[0] - 0.5  # two epochs over the same 128 rows
    assert (out / "sft" / "model.safetensors").is_file() and (out / "sft" / "tokenizer_config.json").is_file()

    dpo_state = json.loads((out / "dpo" / "trainer_state.json").read_text())
    margins = logged(dpo_state, "rewards/margins")
    assert margins[-1] > margins[0] and margins[-1] > 0
    assert (out / "report" / "scores_length.png").is_file()  # the recipe's score_logger callback
    report = json.loads((out / "report" / "run.json").read_text())
    assert report["dpo"]["start_from"] == str(out / "sft")
    page = (out / "report" / "index.html").read_text()  # the report, with every section that applies
    assert re.findall(r'<section id="([a-z]+)">', page) == ["overview", "pool", "scores", "selection", "examples",
                                                            "training", "recipe"]
    assert page.count("data:image/png") == 5  # length histogram, funnel, sft loss, dpo loss, dpo rewards
    assert report["final_losses"]["sft"]["loss"] == losses[-1] and "rewards/margins" in report["final_losses"]["dpo"]
