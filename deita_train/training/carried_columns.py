"""A number per training row carried past TRL's collator, which reads only token columns: the row's column is kept
among the Trainer's signature columns (so `remove_unused_columns` does not drop it) and `FloatColumnCollator` takes
it out of the rows before the collator sees them, then adds it to the batch as one float per row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class FloatColumnCollator:
    """Wraps a collator: collates the rows without `column`, then adds its values (one float per row)."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]], column: str) -> None:
        self.collate = collate
        self.column = column

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows or self.column not in rows[0]:
            return self.collate(rows)
        batch = self.collate([{k: v for k, v in row.items() if k != self.column} for row in rows])
        batch[self.column] = torch.tensor([row[self.column] for row in rows], dtype=torch.float32)
        return batch


def with_column(signature_columns: list[str], column: str) -> list[str]:
    """The Trainer's signature columns with `column` among them."""
    return signature_columns if column in signature_columns else [*signature_columns, column]
