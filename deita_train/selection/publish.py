"""The selected dataset's card (what was selected from what, and how), and its push to the Hugging Face Hub."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData

from deita_train import __version__
from deita_train.recipe.schema import Recipe
from deita_train.selection.config import HubSection

CARD_TAGS = ["deita-train", "data-selection"]


def dataset_card(recipe: Recipe, summary: dict[str, Any]) -> DatasetCard:
    """A card recording the pool, the scorers, the filters, the strategy and the counts of one selection."""
    counts = summary.get("counts", {})
    parameters = {k: v for k, v in summary.items() if k not in ("filters", "counts", "found", "report", "seconds")}
    lines = [
        f"# {recipe.output_dir.name}: {counts.get('selected', '?')} rows selected from {counts.get('pool', '?')}",
        "",
        f"Selected with deita-train {__version__} (seed {recipe.seed}).",
        "",
        "## Pool",
        "",
        "| source | format | split | drawn |",
        "|---|---|---|---|",
        *(f"| `{s.path}` | {s.format} | {s.split} | {drawn(s)} |" for s in recipe.pool),
        "",
        "Licences: this dataset inherits the licence of each source above; check them before reuse.",
        "",
        "## Scores",
        "",
        *(["| column | scorer | options |", "|---|---|---|"] if recipe.score else
          ["None: the selection read columns already in the pool."]),
        *(f"| `{column}` | {config.type} | {options(config)} |" for column, config in recipe.score.items()),
        "",
        "## Selection",
        "",
        f"Strategy `{parameters.get('strategy')}`: " + ", ".join(f"{k}={v}" for k, v in parameters.items()
                                                            if k != "strategy"),
        "",
        "| step | rows |",
        "|---|---|",
        *(f"| {step} | {rows} |" for step, rows in counts_table(summary)),
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in provenance().items()),
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump({k: v for k, v in recipe.raw.items() if k in ("seed", "pool", "score", "select")},
                       sort_keys=False).rstrip(),
        "```",
    ]
    data = DatasetCardData(pretty_name=recipe.output_dir.name, task_categories=["text-generation"], tags=CARD_TAGS)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def provenance() -> dict[str, Any]:
    """What made the selection, as the run record has it: library versions, hardware, the checkout's commit."""
    from deita_train.report.record import git_commit, hardware, versions

    return {**versions(), **hardware(), "git commit": git_commit() or "not a checkout"}


def drawn(source) -> str:
    for name in ("limit", "sample", "fraction"):
        if getattr(source, name) is not None:
            return f"{name} {getattr(source, name)}"
    return "all"


def options(config) -> str:
    skip = {"type", "shard_size"}
    return ", ".join(f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                     if f.name not in skip and getattr(config, f.name) is not None) or "-"


def counts_table(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows remaining after each step: the pool, scored rows, each filter, the strategy."""
    counts = summary.get("counts", {})
    rows = [("pool", counts.get("pool")), ("scored", counts.get("scored"))]
    rows += [(f"filter `{step['filter']}`", step["kept"]) for step in summary.get("filters", [])]
    rows.append(("selected", counts.get("selected")))
    return [(step, value) for step, value in rows if value is not None]


def push_selected(selected: Dataset, card: DatasetCard, hub: HubSection) -> None:
    """Upload the selected rows, then replace the README that `datasets` wrote with `card`, keeping the
    `dataset_info`/`configs` metadata the Hub's loader reads from it."""
    selected.push_to_hub(hub.dataset_id, private=hub.private, commit_message="deita-train: selected rows")
    uploaded = DatasetCard.load(hub.dataset_id, repo_type="dataset")
    metadata = uploaded.data.to_dict() | {k: v for k, v in card.data.to_dict().items() if v is not None}
    DatasetCard(f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n{card.text}").push_to_hub(
        hub.dataset_id, repo_type="dataset", commit_message="deita-train: dataset card"
    )
