"""Values of every row at once: `Value` (numpy or Arrow items, per-turn offsets) and array helpers on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMBERS = ("bool", "int", "float")  # promotion order
DTYPES = {"bool": np.dtype(np.bool_), "int": np.dtype(np.int64), "float": np.dtype(np.float64)}
KINDS = {dtype: kind for kind, dtype in DTYPES.items()}
INT64_MIN = np.iinfo(np.int64).min
INT64 = "overflows a 64-bit integer (integer columns are computed as int64)"
UNSUPPORTED = "is not supported on columns"
COMBINED = ("cannot be combined with columns (booleans, 64-bit integers, floats, strings and flat lists of them "
            "can)")


@dataclass(frozen=True)
class Value:
    """A value for every row of a batch. `data` holds one item per row (numpy bool/int64/float64, or an Arrow
    large_string array) or, when `offsets` is set, each row's turns: row i is `data[offsets[i]:offsets[i + 1]]`.
    Kind `const`: `data` is one Python value, the same for every row."""

    kind: str  # bool, int, float, str or const
    data: Any
    offsets: np.ndarray | None = None

    def item(self, row: int) -> Any:
        """Row `row`'s value in Python (a list for a per-turn value)."""
        if self.kind == "const":
            return self.data
        if self.offsets is None:
            item = self.data[row]
            return item.as_py() if isinstance(item, pa.Scalar) else item.item()
        turns = self.data[self.offsets[row]:self.offsets[row + 1]]
        return turns.to_pylist() if isinstance(turns, pa.Array) else turns.tolist()

    def take(self, keep: np.ndarray) -> Value:
        """The rows flagged in `keep`."""
        if self.kind == "const":
            return self
        if self.offsets is None:
            return Value(self.kind, subset(self.data, keep))
        lengths = np.diff(self.offsets)
        return Value(self.kind, subset(self.data, np.repeat(keep, lengths)), offsets_of(lengths[keep]))


def subset(data: Any, keep: np.ndarray) -> Any:
    """The items of a numpy or Arrow array flagged in `keep`."""
    return data.filter(pa.array(keep)) if isinstance(data, pa.Array) else data[keep]


def pick(data: Any, positions: np.ndarray) -> Any:
    """The items of a numpy or Arrow array at `positions`."""
    return data.take(pa.array(positions)) if isinstance(data, pa.Array) else data[positions]


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """Offsets (n + 1, from 0) of rows with `lengths` turns."""
    return np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))


def repeat(value: Value, counts: np.ndarray) -> Value:
    """A one-item-per-row value with row i's item repeated `counts[i]` times (flat)."""
    return Value(value.kind, pick(value.data, np.repeat(np.arange(len(counts)), counts)))


def flat(value: Value) -> Value:
    """A per-turn value's turns, flat."""
    return Value(value.kind, value.data)


def per_row(ufunc: np.ufunc, items: np.ndarray, offsets: np.ndarray, empty: Any) -> np.ndarray:
    """`ufunc` reduced over each row's turns; `empty` for a row with none."""
    lengths = np.diff(offsets)
    result = np.full(len(lengths), empty, dtype=items.dtype)
    filled = lengths > 0
    if filled.any():
        result[filled] = ufunc.reduceat(items, offsets[:-1][filled])
    return result


def any_per_row(flags: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """Per row: some of its turns is flagged (the flags themselves for a one-item-per-row value)."""
    return flags if offsets is None else per_row(np.logical_or, flags, offsets, False)


def string_lengths(strings: pa.Array) -> np.ndarray:
    """Characters (code points, as Python's `len`) of each string."""
    return pc.utf8_length(strings).to_numpy(zero_copy_only=False)


def truth(value: Value, rows: int) -> np.ndarray:
    """Python's truth of each row's value."""
    if value.kind == "const":
        return np.full(rows, bool(value.data))
    if value.offsets is not None:
        return np.diff(value.offsets) > 0
    if value.kind == "str":
        return pc.binary_length(value.data).to_numpy(zero_copy_only=False) > 0
    return value.data != 0
