"""Finished scoring shards on disk, keyed by what produced them (datatrove-style completion markers).

A shard is `<root>/<scorer type>/<key>.parquet` (the scores, with `id`), `<key>.stats.json` (counts)
and `<key>.done`, written last: a shard without its done marker is not finished and is scored
again. The key hashes the scorer's config, the identity of its models and the shard's rows (their Arrow
content), so a rerun reuses exactly the shards whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deita_train.fingerprints import digest, model_identity
from deita_train.storage import atomic_file, write_json

CACHE_VERSION = 2  # bump when a change to the engine or a scorer changes the numbers or the keys


def shard_keys(config: Any, models: list[str], rows: list[str]) -> list[str]:
    """What each shard's scores depend on: engine version, scorer config, model files (identified once), and the
    digest of the shard's rows (one per shard in `rows`)."""
    scorer = {"version": CACHE_VERSION, "config": asdict(config), "models": [model_identity(name) for name in models]}
    return [digest({**scorer, "rows": digest_of_rows}) for digest_of_rows in rows]


def table_digest(table: pa.Table) -> str:
    """sha256 of `table` (schema metadata aside) as one Arrow IPC stream: the same for the same content, however
    its columns are chunked or sliced."""
    table = table.combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


class ShardStore:
    """Finished shards of one scorer type under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str, suffix: str) -> Path:
        return self.root / f"{key}{suffix}"

    def done(self, key: str) -> bool:
        return self.path(key, ".done").is_file()

    def write(self, key: str, table: pa.Table, stats: dict[str, Any]) -> None:
        """Scores, then stats, then the done marker: each file renamed into place whole."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(key, ".parquet")
        with atomic_file(target, binary=True) as handle:
            pq.write_table(table, handle)
        write_json(self.path(key, ".stats.json"), stats)
        write_json(self.path(key, ".done"), {"rows": table.num_rows})

    def read(self, key: str) -> tuple[pa.Table, dict[str, Any]]:
        if not self.done(key):
            raise FileNotFoundError(f"scoring shard {self.path(key, '')} is not finished; rerun `deita-train score`")
        stats = json.loads(self.path(key, ".stats.json").read_text())
        return pq.read_table(self.path(key, ".parquet")), stats
