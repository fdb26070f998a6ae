"""The scoring engine: columns and nulls, stats, cache reuse and invalidation, resume after a kill, processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_from_disk

from deita_train.scoring import SCORERS, ScoringContext
from deita_train.scoring.engine import score_pool
from deita_train.scoring.ifd import IFDScorer

from .scoring_fixtures import mixed_records, record


def pool() -> Dataset:
    rows = mixed_records()
    rows.append(record(len(rows), [("word " * 80, "too long a prompt for max_length 64")]))
    return Dataset.from_list(rows)


def configs(ifd_convention: str = "superfiltering") -> dict:
    def make(kind, **options):
        return SCORERS.get(kind, "test").config_class(type=kind, shard_size=3, **options)

    return {
        "ifd": make("ifd", dtype="float32", max_length=64, convention=ifd_convention),
        "emb": make("embedding", dtype="float32"),
        "len": make("length"),
    }


def run(tiny_model: Path, out: Path, scorers: dict | None = None):
    return score_pool(pool(), scorers or configs(), ScoringContext(model_name_or_path=str(tiny_model)), out / "scored")


def test_scored_columns_nulls_and_stats(tiny_model, tmp_path):
    scored, stats = run(tiny_model, tmp_path)
    assert scored["id"] == list(range(12)) and len(load_from_disk(str(tmp_path / "scored"))) == 12
    assert str(scored.features["emb"]) == "List(Value('float32'), length=64)"
    assert str(scored.features["ifd"]) == "List(Value('float64'))"
    assert scored[11]["ifd"] is None and scored[11]["ifd_loss_cond"] is None
    assert scored["ifd_reason"] == [None] * 11 + ["prompt fills max_length"] and set(scored["emb_reason"]) == {None}
    assert len(scored[9]["ifd"]) == 3 and len(scored[9]["ifd_loss_direct"]) == 3  # one per turn
    assert stats["ifd"]["unscorable"] == {"prompt fills max_length": 1} and stats["ifd"]["scored"] == 11
    assert stats["emb"]["scored"] == 12 and stats["ifd"]["shards"] == {"total": 4, "reused": 0}
    assert len(list((tmp_path / "scored_shards" / "ifd").glob("*.done"))) == 4


def test_killed_run_resumes_to_identical_output(tiny_model, tmp_path, monkeypatch):
    clean, _ = run(tiny_model, tmp_path / "clean")
    original = IFDScorer.score_batch
    calls = []

    def dies_after_two(self, batch):
        calls.append(len(batch))
        if len(calls) > 2:
            raise RuntimeError("injected failure")
        return original(self, batch)

    monkeypatch.setattr(IFDScorer, "score_batch", dies_after_two)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(tiny_model, tmp_path / "killed")
    assert len(list((tmp_path / "killed" / "scored_shards" / "ifd").glob("*.done"))) == 2
    assert not (tmp_path / "killed" / "scored").exists()

    def counts(self, batch):
        calls.append(len(batch))
        return original(self, batch)

    calls.clear()
    monkeypatch.setattr(IFDScorer, "score_batch", counts)
    resumed, stats = run(tiny_model, tmp_path / "killed")
    assert len(calls) == 2 and stats["ifd"]["shards"] == {"total": 4, "reused": 2}  # only the missing shards
    assert resumed.to_list() == clean.to_list()


def test_changed_config_invalidates_only_its_cache(tiny_model, tmp_path):
    run(tiny_model, tmp_path)
    _, stats = run(tiny_model, tmp_path, configs(ifd_convention="cherry"))
    assert stats["ifd"]["shards"]["reused"] == 0
    assert stats["emb"]["shards"]["reused"] == 4 and stats["len"]["shards"]["reused"] == 4


SCRIPT = """
import sys
from pathlib import Path
from tests.test_scoring_engine import run
from accelerate import PartialState
scored, stats = run(Path(sys.argv[1]), Path(sys.argv[2]))
print(f"process {PartialState().process_index} of {PartialState().num_processes}: {len(scored)} rows")
PartialState().destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_write_the_same_scored_as_one(tiny_model, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each launched process (OMP_NUM_THREADS=1): same GEMM summation order, same bits
    try:
        single, _ = run(tiny_model, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(script), str(tiny_model), str(tmp_path / "two")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 0 of 2: 12 rows" in done.stdout and "process 1 of 2: 12 rows" in done.stdout
    two = load_from_disk(str(tmp_path / "two" / "scored"))
    assert two.to_list() == single.to_list()
    done_markers = list((tmp_path / "two" / "scored_shards" / "ifd").glob("*.done"))
    assert len(done_markers) == 4 and all(json.loads(p.read_text())["rows"] for p in done_markers)


def test_recipe_score_options_are_typed_per_scorer():
    from deita_train.scoring.section import parse_score

    problems: list[str] = []
    parsed = parse_score({
        "ifd": {"type": "ifd", "convention": "cherry", "model": "gpt2", "batch_tokens": 4096},
        "quality": {"type": "deita_quality", "max_length": 1024, "dtype": "bfloat16"},
        "emb": {"type": "embedding", "pooling": "mean", "storage_dtype": "float16"},
    }, problems)
    assert problems == [] and parsed["ifd"].convention == "cherry" and parsed["emb"].storage_dtype == "float16"
    parse_score({"ifd": {"type": "ifd", "convention": "alpaca", "batch_token": 1}}, problems)
    assert any("score.ifd.convention" in p for p in problems) and any("score.ifd.batch_token" in p for p in problems)
