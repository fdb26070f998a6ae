"""The report's sections, each built from what is on disk, and left out when its stage did not run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from deita_train.report import figures
from deita_train.report.columns import column_array, column_kind, numeric_columns, per_sample
from deita_train.report.outputs import RunOutputs
from deita_train.report.page import Block, Section

UNITS = {"length": "tokens, summed over turns", "deita_complexity": "Deita complexity, 1-6, summed over turns",
         "deita_quality": "Deita quality, 1-6, summed over turns", "ifd": "IFD ratio, summed over turns",
         "ppl": "perplexity, summed over turns", "loss": "nats per token, summed over turns",
         "reward": "reward-model logit", "embedding": "vector"}
CORRELATION_ROWS = 200_000  # rows sampled for the rank correlations
COVERAGE_ROWS = 20_000  # pool rows drawn for the coverage map
EXAMPLE_CHARACTERS = 400  # of each message shown in the examples
SKIPS_SHOWN = 20


def overview(outputs: RunOutputs) -> Section | None:
    run = outputs.run
    section = Section("overview", "Run")
    section.text(f"Output folder: {outputs.out}.")
    stages = run.get("stages", {})
    if stages:
        section.table(["stage", "status", "seconds", "fingerprint"],
                      [[name, s.get("status"), s.get("seconds"), (s.get("fingerprint") or "")[:12]]
                       for name, s in stages.items()])
    facts = [["processes", run.get("processes")], ["git commit", run.get("git_commit") or "not a checkout"],
             *([name, value] for name, value in (run.get("hardware") or {}).items()),
             *([name, value] for name, value in (run.get("versions") or {}).items())]
    section.table(["", ""], [row for row in facts if row[1] is not None])
    for stage, losses in (run.get("final_losses") or {}).items():
        section.table([f"{stage}: final", "value"], [[name, value] for name, value in losses.items()])
    return section


def pool(outputs: RunOutputs) -> Section | None:
    data = outputs.run.get("pool")
    if not data:
        return None
    section = Section("pool", "Pool")
    sources = data.get("sources", [])
    section.table(["source", "read", "kept", "skipped"],
                  [[s["path"], s["read"], s["kept"], len(s["skipped"])] for s in sources])
    skipped = [[s["path"], item["where"], item["problem"]] for s in sources for item in s["skipped"]]
    if skipped:
        more = f" (the first {SKIPS_SHOWN} of {len(skipped)})" if len(skipped) > SKIPS_SHOWN else ""
        section.text(f"Skipped records{more}:").table(["source", "where", "problem"], skipped[:SKIPS_SHOWN])
    return section


def synth(outputs: RunOutputs) -> Section | None:
    summary = outputs.synth
    if summary is None:
        return None
    section = Section("synth", "Synthesis (Magpie)")
    provenance = summary.get("provenance", {})
    section.text(f"{summary.get('rows', 0):,} rows kept of {summary['requested']:,} instructions requested, from "
                 f"{provenance.get('model')} ({provenance.get('backend')}).")
    dropped = summary["generated"]["dropped"]
    rows = [["kept after generation", summary["generated"]["kept"]],
            *([f"dropped: {cause}", count] for cause, count in dropped.items())]
    if "repetition" in summary:
        rows.append(["near-duplicates", summary["repetition"]["duplicates"]])
    rows += [[f"filter {step['filter']!r}: failed / null", f"{step['failed']} / {step['null']}"]
             for step in summary.get("filters", [])]
    section.table(["step", "rows"], rows)
    failures = [[phase, cause, count] for phase, stats in summary.get("phases", {}).items()
                for kind in ("failed", "dropped") for cause, count in stats.get(kind, {}).items()]
    if failures:
        section.text("Values left null, by cause (never guessed):").table(["phase", "cause", "rows"], failures)
    throughput = summary.get("throughput")
    if throughput:
        section.table(["throughput", ""], [[name, value] for name, value in throughput.items()])
    return section


def scored_columns(outputs: RunOutputs) -> dict[str, str]:
    """The score and embedding columns of `scored/` with their scorer type: the recipe's scorers, then the pool's
    own numeric columns (`value`, or `embedding` for fixed-size vectors), the scorers' inspection columns
    (`<column>_<extra>`) aside."""
    if outputs.scored is None:
        return {}
    types = outputs.score_types()
    found = {column: kind for column, kind in types.items() if column in outputs.scored.column_names}
    for column in numeric_columns(outputs.scored):
        if column in found or column == "source_row" or any(column.startswith(f"{c}_") for c in types):
            continue
        kind = column_kind(column_array(outputs.scored, column))
        if kind is not None:
            found[column] = "embedding" if kind == "embedding" else "value"
    return found


def score_columns(outputs: RunOutputs) -> dict[str, str]:
    """The sample-level score columns (embeddings aside)."""
    return {column: kind for column, kind in scored_columns(outputs).items() if kind != "embedding"}


def sample_scores(outputs: RunOutputs, column: str) -> np.ndarray:
    """One float per pool row (per-turn lists summed); NaN where unscored."""
    return per_sample(column_array(outputs.scored, column))


def scores(outputs: RunOutputs) -> Section | None:
    columns = score_columns(outputs)
    if not columns:
        return None
    section = Section("scores", "Scores")
    selected = outputs.selected_ids()
    stats = outputs.run.get("score", {})
    rows = []
    for column, kind in columns.items():
        values = sample_scores(outputs, column)
        chosen = values[selected] if selected is not None else None
        section.chart(figures.distribution(column, values, chosen, UNITS.get(kind, "value")), f"{column} histogram")
        found = stats.get(column, {})
        unscorable = ", ".join(f"{reason}: {n}" for reason, n in found.get("unscorable", {}).items()) or "none"
        rows.append([column, kind, int((~np.isnan(values)).sum()), int(np.isnan(values).sum()), unscorable,
                     found.get("truncated", "")])
    section.table(["column", "scorer", "scored", "unscored", "unscorable by reason", "truncated"], rows)
    return section


def agreement(outputs: RunOutputs) -> Section | None:
    columns = list(score_columns(outputs))
    if len(columns) < 2:
        return None
    import pandas as pd

    frame = pd.DataFrame({column: sample_scores(outputs, column) for column in columns})
    if len(frame) > CORRELATION_ROWS:
        frame = frame.sample(CORRELATION_ROWS, random_state=0)
    matrix = frame.corr(method="spearman").to_numpy()
    section = Section("agreement", "Agreement between scorers")
    section.text("Spearman rank correlation of every pair of sample-level scores (per-turn scores summed), over the "
                 "rows both scored: how far two scorers would pick the same rows.")
    section.chart(figures.correlation_heatmap(columns, matrix), "Spearman correlation heat map")
    section.table(["", *columns], [[a, *matrix[i]] for i, a in enumerate(columns)])
    return section


def selection(outputs: RunOutputs) -> Section | None:
    summary = outputs.selection
    if summary is None:
        return None
    funnel = summary["funnel"]
    section = Section("selection", "Selection")
    parameters = {k: v for k, v in summary.items()
                  if k not in ("filters", "counts", "funnel", "found", "report", "seconds", "decontamination")}
    section.text("Strategy: " + ", ".join(f"{k}={v}" for k, v in parameters.items()) + ".")
    steps = [("pool", funnel["pool"])]
    left = funnel["pool"]
    for name, removed in funnel_removals(funnel):
        left -= removed
        steps.append((f"- {name}", left))
    section.chart(figures.funnel(steps), "selection funnel")
    section.table(["step", "removed", "left"], [[name, removed, left] for name, removed, left in walk(funnel)])
    budget = funnel.get("budget")
    section.text(f"Selected {funnel['selected']:,}" + (f" of a budget of {budget:,}" if budget else "")
                 + (f"; short by {funnel['shortfall']:,}" if funnel.get("shortfall") else "") + ".")
    found = {k: v for k, v in summary.get("found", {}).items() if not isinstance(v, (list, dict))}
    if found:
        section.table(["the strategy found", ""], [[k, v] for k, v in found.items()])
    mix = funnel.get("mix")
    if mix:
        section.text(f"Source mix by {mix['by']!r} (shortfall: {mix['on_shortfall']}): each source's share of the "
                     "budget, and what its rows gave.")
        section.table(["source", "share", "candidates", "budget", "received", "selected", "shortfall"],
                      [[name, s["share"], s["candidates"], s["budget"], s["received"], s["selected"], s["shortfall"]]
                       for name, s in mix["sources"].items()])
    decontamination = summary.get("decontamination")
    if decontamination:
        section.text(f"Decontamination ({decontamination['ngram']}-grams): rows removed per eval set, then the first "
                     "matches (every row's match is in report/audit.parquet).")
        section.table(["eval set", "prompts", "rows removed"],
                      [[name, found["prompts"], found["rows"]] for name, found in decontamination["sets"].items()])
        section.table(["id", "set", "match"], [[e["id"], e["set"], e.get("ngram") or e.get("prompt")]
                                               for e in decontamination["examples"]])
    return section


def funnel_removals(funnel: dict[str, Any]) -> list[tuple[str, int]]:
    """Each step of the funnel that removes rows, in order, with the rows it removed."""
    fixed = {"pool", "filtered", "unscored", "beyond_budget", "selected", "budget", "shortfall", "decontaminated",
             "not_in_mix", "mix"}
    removals = []
    if "decontaminated" in funnel:
        removals.append(("decontaminated", funnel["decontaminated"]["rows"]))
    removals += [(f"filter {f['filter']!r}", f["removed"]) for f in funnel["filtered"]["by_filter"]]
    if "not_in_mix" in funnel:
        removals.append(("not in mix", funnel["not_in_mix"]))
    removals.append(("unscored", funnel["unscored"]["rows"]))
    removals += [(name.replace("_", " "), value) for name, value in funnel.items()
                 if name not in fixed and isinstance(value, int)]
    removals.append(("beyond budget", funnel["beyond_budget"]))
    return removals


def walk(funnel: dict[str, Any]) -> list[tuple[str, int, int]]:
    left, rows = funnel["pool"], []
    for name, removed in funnel_removals(funnel):
        left -= removed
        rows.append((name, removed, left))
    return rows


def coverage(outputs: RunOutputs) -> Section | None:
    vectors_column = next((c for c, kind in scored_columns(outputs).items() if kind == "embedding"), None)
    selected = outputs.selected_ids()
    if vectors_column is None or selected is None:
        return None
    import torch

    from deita_train.selection.scores import embedding_matrix

    vectors, valid = embedding_matrix(outputs.scored, vectors_column)
    if len(vectors) < 3:
        return None
    position = np.cumsum(valid) - 1  # pool row -> row of `vectors`
    rng = np.random.default_rng(0)
    background = rng.choice(len(vectors), size=min(len(vectors), COVERAGE_ROWS), replace=False)
    marked = position[selected[valid[selected]]]
    data = torch.from_numpy(vectors[background]).float()
    mean = data.mean(0)
    _, _, basis = torch.pca_lowrank(data - mean, q=2, center=False, niter=4)

    def project(rows: np.ndarray) -> np.ndarray:
        return ((torch.from_numpy(vectors[rows]).float() - mean) @ basis).numpy()

    section = Section("coverage", "Coverage")
    section.text(f"The pool's {vectors_column!r} vectors projected on their first two principal components (PCA fit "
                 f"on up to {COVERAGE_ROWS:,} pool rows); the selected rows on top.")
    return section.chart(figures.coverage(vectors_column, project(background), project(marked), len(vectors)),
                         "coverage map")


def conversation(messages: list[dict[str, str]]) -> Block:
    """A conversation as text, each message cut to EXAMPLE_CHARACTERS."""
    lines = []
    for message in messages:
        content = message["content"]
        cut = content[:EXAMPLE_CHARACTERS] + (" [...]" if len(content) > EXAMPLE_CHARACTERS else "")
        lines.append(f"{message['role']}: {cut}")
    return Block("\n".join(lines))


def examples(outputs: RunOutputs) -> Section | None:
    if outputs.selected is None or "messages" not in outputs.selected.column_names or not len(outputs.selected):
        return None
    section = Section("examples", "Examples")
    rows = len(outputs.selected)
    first, last = list(range(min(5, rows))), list(range(max(5, rows - 5), rows))
    shown = outputs.selected.select(first + last).select_columns(["id", "messages"]).to_list()
    section.text("The first 5 and the last 5 selected rows, in selection order (for a score-ranked strategy: the "
                 "highest and the lowest scores selected).")
    section.table(["rank", "id", "conversation"], [[rank + 1, row["id"], conversation(row["messages"])]
                                                   for rank, row in zip(first + last, shown, strict=True)])
    rejected = rejected_rows(outputs)
    if rejected:
        section.text("Rows not selected, with the first reason (from report/audit.parquet):")
        section.table(["id", "reason", "conversation"], rejected)
    return section


def rejected_rows(outputs: RunOutputs) -> list[list[Any]]:
    """Up to 5 pool rows that were not selected, the first of each reason before a second of any, with their
    reason and conversation (from report/audit.parquet; records skipped at load have no conversation)."""
    if outputs.audit is None or outputs.scored is None:
        return []
    audit = outputs.rejected()
    firsts = {row["reason"]: row for row in reversed(audit)}  # the first row of each reason
    picked = sorted(firsts.values(), key=lambda row: row["id"])[:5]
    picked += [row for row in audit if row not in picked][: 5 - len(picked)]
    messages = outputs.scored.select([row["id"] for row in picked])["messages"]
    return [[row["id"], f"{row['reason']}: {row['detail']}" if row["detail"] else row["reason"], conversation(m)]
            for row, m in zip(picked, messages, strict=True)]


def series(history: list[dict[str, Any]], name: str) -> tuple[list[float], list[float]]:
    points = [(entry["step"], entry[name]) for entry in history if name in entry and "step" in entry]
    return [x for x, _ in points], [y for _, y in points]


def training(outputs: RunOutputs) -> Section | None:
    if not outputs.trainer_states:
        return None
    section = Section("training", "Training")
    for stage, state in outputs.trainer_states.items():
        history = state.get("log_history", [])
        curves = {name: series(history, key) for name, key in (("train loss", "loss"), ("eval loss", "eval_loss"))}
        curves = {name: points for name, points in curves.items() if points[0]}
        if curves:
            section.chart(figures.curves(f"{stage}: loss", "loss", curves), f"{stage} loss curves")
        rewards = {name: series(history, key) for name, key in
                   (("reward margin", "rewards/margins"), ("reward accuracy", "rewards/accuracies"))}
        rewards = {name: points for name, points in rewards.items() if points[0]}
        if rewards:
            section.chart(figures.curves(f"{stage}: chosen vs rejected rewards", "value", rewards),
                          f"{stage} reward margins and accuracy")
        section.text(f"{stage}: {state.get('global_step', 0)} optimizer steps, {state.get('epoch', 0):.3g} epochs.")
    return section


def online(outputs: RunOutputs) -> Section | None:
    if not outputs.rounds:
        return None
    section = Section("online", "Online selection")
    labels = [str(r["round"]) for r in outputs.rounds]
    changed = [r["counts"].get("changed", 0) or 0 for r in outputs.rounds]
    section.chart(figures.bars("Rows changed per round", "round", "rows changed", labels, changed),
                  "rows changed per round")
    means = {kind: ([r["round"] for r in outputs.rounds], [r["scores"][kind]["mean"] for r in outputs.rounds])
             for kind in ("scored", "selected")}
    section.chart(figures.curves("Score drift: mean online score per round", "mean score", means), "score drift")
    section.table(["round", "step", "trigger", "rescored", "selected", "changed", "seconds"],
                  [[r["round"], r["global_step"], r["trigger"], r["counts"].get("rescored"),
                    r["counts"].get("selected"), r["counts"].get("changed"), r["seconds"]["total"]]
                   for r in outputs.rounds])
    return section


def recipe(outputs: RunOutputs) -> Section | None:
    resolved = outputs.run.get("recipe")
    if not resolved:
        return None
    return Section("recipe", "Recipe (resolved)").table(["recipe"], [[Block(json.dumps(resolved, indent=2))]])


SECTIONS: list[Callable[[RunOutputs], Section | None]] = [
    overview, pool, synth, scores, agreement, selection, coverage, examples, training, online, recipe,
]
