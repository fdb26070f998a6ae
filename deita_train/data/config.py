"""The `pool:` section (and every other list of data sources): one `SourceConfig` per source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SourceFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "preference"]


@dataclass
class SourceConfig:
    """One data source: a local .json (a list of records), .jsonl, .parquet or .csv file (each optionally .gz), or a
    hub dataset id."""

    path: str = field(metadata={"help": "Local file or hub dataset id."})
    format: SourceFormat = field(default="auto", metadata={"help": "Record format; `auto` detects it per record."})
    split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    name: str | None = field(default=None, metadata={"help": "Configuration name of a hub dataset."})
    limit: int | None = field(default=None, metadata={"help": "Keep the first N records of this source."})
    sample: int | None = field(default=None, metadata={"help": "Keep N records drawn with the recipe seed."})
    fraction: float | None = field(
        default=None, metadata={"help": "Keep this fraction of records, drawn with the recipe seed."}
    )
    on_error: Literal["raise", "skip"] = field(
        default="raise",
        metadata={"help": "A bad record stops the run (`raise`) or is skipped and listed in the report (`skip`)."},
    )
