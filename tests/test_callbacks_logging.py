"""score_logger and selection_stats under a real TRL SFTTrainer with the tiny model, on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset
from deita_train.callbacks import (
    CallbackContext,
    ScoreLoggerCallback,
    ScoreLoggerConfig,
    SelectionStatsCallback,
    SelectionStatsConfig,
    build_callbacks,
    parse_callbacks,
)
from deita_train.callbacks.backends import tensorboard_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from deita_train.recipe.errors import RecipeError


def pool_rows(n: int = 40) -> Dataset:
    """Conversations with per-turn scores, a per-sample float, a fixed-size embedding and one unscored row."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        turns = 1 + i % 2
        messages = []
        for t in range(turns):
            messages += [{"role": "user", "content": f"question {i} part {t}: say something about {i * 7}"},
                         {"role": "assistant", "content": f"answer {i}.{t} " + "word " * (3 + i % 5)}]
        rows.append({
            "id": i, "messages": messages, "source": "test",
            "complexity": None if i == 3 else [float(x) for x in rng.uniform(1, 6, turns)],
            "quality": [float(x) for x in rng.uniform(1, 6, turns)],
            "reward": float(rng.normal()),
            "embedding": [float(x) for x in rng.normal(size=4)],
        })
    return Dataset.from_list(rows)


def sft_trainer(model_dir, out, dataset, callbacks, **args) -> SFTTrainer:
    defaults = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "report_to": ["tensorboard"],
                "save_strategy": "no", "logging_steps": 1, "use_cpu": True, "max_length": 128,
                "dataloader_num_workers": 0}
    config = SFTConfig(output_dir=str(out), **(defaults | args))
    return SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config, train_dataset=dataset,
                      processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=callbacks)


def events(args) -> EventAccumulator:
    accumulator = EventAccumulator(str(tensorboard_dir(args)), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_score_logger_writes_histograms_scalars_and_pngs(tiny_model, tmp_path):
    pool = pool_rows()
    selected = pool.select([5, 1, 8, 13, 3, 21, 34, 2])
    (tmp_path / "selection.json").write_text(json.dumps(
        {"strategy": "threshold", "score": "reward", "threshold": 0.25, "budget": 8,
         "counts": {"pool": 40, "selected": 8}}))
    context = CallbackContext(output_dir=tmp_path, pool=pool, selected=selected, train_dataset=selected,
                              selection_path=tmp_path / "selection.json")
    callback = ScoreLoggerCallback(ScoreLoggerConfig(name="score_logger", bins=10), context)
    trainer = sft_trainer(tiny_model, tmp_path / "sft", selected.select_columns(["messages"]), [callback])
    trainer.train()

    found = events(trainer.args)
    histograms, scalars = found.Tags()["histograms"], found.Tags()["scalars"]
    for column in ("complexity", "quality", "reward"):
        assert f"selection/pool/{column}" in histograms
        assert f"selection/selected/{column}" in histograms
        assert (tmp_path / "report" / f"scores_{column}.png").stat().st_size > 1000
    assert not any("embedding" in tag for tag in histograms + scalars)  # a vector is not a score
    assert found.Scalars("selection/count/selected")[0].value == 8
    assert found.Scalars("selection/param/threshold")[0].value == pytest.approx(0.25)
    assert found.Scalars("selection/pool/complexity_unscored")[0].value == 1
    assert found.Scalars("selection/selected/complexity_scored")[0].value == 7
    expected = np.mean([sum(selected[i]["quality"]) for i in range(len(selected))])
    assert found.Scalars("selection/selected/quality_mean")[0].value == pytest.approx(expected, rel=1e-5)
    histogram = found.Histograms("selection/pool/reward")[0].histogram_value
    assert histogram.num == 40


def test_selection_stats_logs_the_scores_of_the_rows_trained_on(tiny_model, tmp_path):
    data = pool_rows(24)
    trainer = sft_trainer(tiny_model, tmp_path / "sft", data.select_columns(["id", "messages"]), [],
                          remove_unused_columns=False, gradient_accumulation_steps=2, max_steps=3,
                          per_device_train_batch_size=3)
    # A score whose per-step mean the test can recompute from the batches the model sees: tokens per row.
    tokens = {row_id: len(ids) for row_id, ids in zip(trainer.train_dataset["id"], trainer.train_dataset["input_ids"],
                                                      strict=True)}
    scored = data.add_column("tokens", [float(tokens[i]) for i in data["id"]])
    trainer.add_callback(SelectionStatsCallback(SelectionStatsConfig(name="selection_stats"),
                                                CallbackContext(output_dir=tmp_path, train_dataset=scored)))
    seen: list[list[int]] = []
    trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["attention_mask"].sum(dim=1).tolist()), with_kwargs=True)
    trainer.train()

    found = events(trainer.args)
    logged = {event.step: event.value for event in found.Scalars("selection/tokens_mean")}
    assert sorted(logged) == [1, 2, 3]
    for step in (1, 2, 3):
        rows = seen[2 * (step - 1)] + seen[2 * (step - 1) + 1]  # two micro-batches per optimizer step
        assert logged[step] == pytest.approx(np.mean(rows), rel=1e-5)
    assert {"selection/complexity_mean", "selection/quality_mean", "selection/reward_mean"} <= set(
        found.Tags()["scalars"])


def test_selection_stats_without_ids_names_the_fix(tiny_model, tmp_path):
    data = pool_rows(8)
    callback = SelectionStatsCallback(SelectionStatsConfig(name="selection_stats"),
                                      CallbackContext(output_dir=tmp_path, train_dataset=data))
    trainer = sft_trainer(tiny_model, tmp_path / "sft", data.select_columns(["id", "messages"]), [callback])
    with pytest.raises(ValueError, match="remove_unused_columns: false"):
        trainer.train()


def test_parse_callbacks_collects_every_problem_with_its_key():
    problems: list[str] = []
    configs = parse_callbacks([
        {"name": "score_logger", "bins": 20},
        {"name": "scor_logger"},
        {"name": "eval", "every_steps": "often", "judge": {"base_url": "http://x/v1", "model": "m"}},
        {"name": "selection_stats", "colums": ["quality"]},
        "eval",
    ], problems)
    assert [c.name for c in configs] == ["score_logger"] and configs[0].bins == 20
    assert any(p.startswith("callbacks.1.name: unknown callback 'scor_logger'; did you mean 'score_logger'")
               for p in problems)
    assert "callbacks.2.every_steps: expected int, got str 'often'" in problems
    assert any(p.startswith("callbacks.3.colums: unknown key; did you mean 'columns'") for p in problems)
    assert any(p.startswith("callbacks.4:") for p in problems)
    assert len(problems) == 4
    with pytest.raises(RecipeError, match="callbacks.0.name"):
        build_callbacks([{"name": "nope"}], CallbackContext(output_dir="."))
    built = build_callbacks([{"name": "selection_stats", "every_steps": 2}], CallbackContext(output_dir="."))
    assert isinstance(built[0], SelectionStatsCallback) and built[0].config.every_steps == 2


def test_score_logger_logs_to_wandb_offline(tiny_model, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "deita-train-test")
    pool = pool_rows(12)
    selected = pool.select([0, 4, 7])
    (tmp_path / "selection.json").write_text(json.dumps({"strategy": "top_k", "score": "quality", "budget": 3,
                                                         "counts": {"pool": 12, "selected": 3}}))
    context = CallbackContext(output_dir=tmp_path, pool=pool, selected=selected, train_dataset=selected,
                              selection_path=tmp_path / "selection.json")
    callback = ScoreLoggerCallback(ScoreLoggerConfig(name="score_logger"), context)
    trainer = sft_trainer(tiny_model, tmp_path / "sft", selected.select_columns(["messages"]), [callback],
                          report_to=["wandb"], max_steps=1)
    try:
        trainer.train()
        summary = dict(wandb.run.summary)
    finally:
        wandb.finish()
    assert summary["selection/pool/quality"]["_type"] == "histogram"
    assert summary["selection/count/selected"] == 3
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert not (tmp_path / "sft" / "runs").exists()  # tensorboard is not in report_to
