"""The synth stage's outputs, from its finished shards: kept rows joined with their tags, near-duplicates marked
(and dropped), the filters applied, then `synth/data` (conversations), `synth/pairs` (DPO pairs, when asked) and
`synth/summary.json` (every count by cause, throughput).

Rows stay in instruction-id order, so the earliest-index duplicate rule and the outputs are the same however many
processes made the shards.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from deita_train.errors import UserError
from deita_train.storage import save_dataset, write_json
from deita_train.synth.config import SynthConfig

logger = logging.getLogger(__name__)

WORK_COLUMNS = ("drop_reason", "candidates", "candidate_rewards")  # shard columns the outputs leave out


class EmptySynthesis(UserError):
    """Nothing survived generation, deduplication and the filters."""


def assemble(shards: Any, config: SynthConfig, target: Path, reused: dict[str, int],
             seconds: float) -> dict[str, Any]:
    """Join the phases' shards, dedup, filter, write the outputs under `target`; the summary."""
    generated, generate_stats = shards.read(shards.phases[0])
    table = generated.filter(generated.column("drop_reason").is_null())
    phase_stats = {}
    for phase in shards.phases[1:]:
        columns, stats = shards.read(phase)
        if columns.column("id") != table.column("id"):
            raise RuntimeError(f"synth {phase.name}: its shards hold other rows than the generated ones; "
                               "delete synth_shards/ and run again")
        for name in columns.column_names[1:]:
            table = table.append_column(name, columns.column(name))
        phase_stats[phase.name] = merged_counts(stats)
    generation = merged_counts(generate_stats)
    summary: dict[str, Any] = {
        "requested": config.num_instructions,
        "generated": {"kept": table.num_rows, "dropped": generation["dropped"]},
        "phases": phase_stats,
        "provenance": provenance(shards.phases[0], config),
        "shards": {"total": len(shards.ranges), "reused": reused},
    }
    if config.repetition is not None:
        table, summary["repetition"] = mark_repeats(table, config)
    table, summary["filters"] = filtered(table, config.filters)
    if table.num_rows == 0:
        write_json(target / "summary.json", summary | {"rows": 0})
        raise EmptySynthesis(f"synth: no row left of {config.num_instructions} instructions; {losses(summary)}; "
                             f"every count in {target / 'summary.json'}")
    conversations = Dataset(table.drop_columns([c for c in WORK_COLUMNS if c in table.column_names]))
    save_dataset(conversations, target / "data")
    if config.pairs is not None:
        pairs = pair_rows(table)
        summary["pairs"] = {"made": pairs.num_rows, "candidates_cut": generation.get("candidates_cut", 0),
                            **phase_stats.get("pairs", {})}
        if pairs.num_rows:
            save_dataset(Dataset(pairs), target / "pairs")
    summary["rows"] = table.num_rows
    summary["throughput"] = throughput(generate_stats, seconds)
    write_json(target / "summary.json", summary)
    if table.num_rows < config.num_instructions:
        logger.warning("synth: %d of %d requested instructions kept; counts by cause in %s", table.num_rows,
                       config.num_instructions, target / "summary.json")
    return summary


def losses(summary: dict[str, Any]) -> str:
    """Where rows went, in words: generation drops by cause, duplicates, each filter's losses."""
    parts = [f"{count} {cause}" for cause, count in summary["generated"]["dropped"].items()]
    if "repetition" in summary:
        parts.append(f"{summary['repetition']['duplicates']} near-duplicates")
    parts += [f"{step['failed'] + step['null']} failed {step['filter']!r} ({step['null']} null)"
              for step in summary["filters"]]
    return "lost: " + ", ".join(parts) if parts else "nothing was generated"


def merged_counts(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Shard stats summed: numbers added, count tables (dicts) added key by key."""
    merged: dict[str, Any] = {}
    for shard in stats:
        for name, value in shard.items():
            if isinstance(value, dict):
                merged[name] = dict(Counter(merged.get(name, {})) + Counter(value))
            elif name != "seconds":
                merged[name] = merged.get(name, 0) + value
    return merged


def provenance(generate: Any, config: SynthConfig) -> dict[str, Any]:
    """Model, backend, template and sampling that made every row (also written on each row)."""
    return {"model": config.generator.model, "backend": config.generator.backend,
            "pre_query_template": config.pre_query_template, "sampling": asdict(config.instruction),
            "response_sampling": asdict(config.response), "seed": generate.seed}


def mark_repeats(table: pa.Table, config: SynthConfig) -> tuple[pa.Table, dict[str, Any]]:
    """`min_neighbor_distance`, `repeat_count`, `duplicate` over the kept instructions; duplicates dropped when
    `repetition.drop_duplicates`."""
    from deita_train.synth.repetition import repetition_stats

    stats = repetition_stats(table.column("instruction").to_pylist(), config.repetition)
    table = (table.append_column("min_neighbor_distance", pa.array(stats.min_neighbor_distance, pa.float32()))
             .append_column("repeat_count", pa.array(stats.repeat_count, pa.int64()))
             .append_column("duplicate", pa.array(stats.duplicate, pa.bool_())))
    report = {"duplicates": int(stats.duplicate.sum()), "with_repeats": int((stats.repeat_count > 0).sum())}
    if config.repetition.drop_duplicates:
        table = table.filter(pa.array(~stats.duplicate))
    return table, report


def filtered(table: pa.Table, filters: list[str]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The rows passing every filter (the selection stage's filter language), and each filter's counts."""
    if not filters:
        return table, []
    from deita_train.selection.filters import apply_filters

    positions, steps, _ = apply_filters(Dataset(table), filters, key="synth.filters")
    return table.take(pa.array(positions, pa.int64())), steps


def pair_rows(table: pa.Table) -> pa.Table:
    """TRL's conversational preference rows for the kept rows that got a pair."""
    has_pair = pc.invert(table.column("chosen").is_null())
    rows = table.filter(has_pair)
    user = [[{"role": "user", "content": text}] for text in rows.column("instruction").to_pylist()]

    def answers(name: str) -> list[list[dict[str, str]]]:
        return [[{"role": "assistant", "content": text}] for text in rows.column(name).to_pylist()]

    return pa.table({"id": rows.column("id"), "prompt": user, "chosen": answers("chosen"),
                     "rejected": answers("rejected"), "chosen_reward": rows.column("chosen_reward"),
                     "rejected_reward": rows.column("rejected_reward")})


def throughput(stats: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Instructions and tokens per second of generation, over the shards generated in this run or before."""
    generating = sum(shard.get("seconds", 0.0) for shard in stats) or float("nan")
    rows = sum(shard["rows"] for shard in stats)
    responses = sum(shard["response_tokens"] for shard in stats)
    tokens = sum(s["instruction_tokens"] + s["response_tokens"] + s.get("candidate_tokens", 0) for s in stats)
    return {"generate_seconds": round(generating, 3), "run_seconds": round(seconds, 3),
            "instructions_per_s": round(rows / generating, 3),
            "response_tokens_per_s": round(responses / generating, 3), "tokens_per_s": round(tokens / generating, 3)}
