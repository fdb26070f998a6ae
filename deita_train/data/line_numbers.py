"""Line numbers of a JSONL file's records, from byte scans in fixed-size chunks (memory flat in the file's size).

The `json` builder skips blank lines, so its row N is the file's line N + 1 only when the file has none; otherwise
`record_lines` says which line each row came from. A line is blank when it holds only ASCII whitespace, as
`bytes.strip()` (and so the line reader) sees it.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

import numpy as np

CHUNK_BYTES = 8 << 20
WHITESPACE = np.zeros(256, dtype=bool)
WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True


def open_bytes(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def count_lines(path: Path) -> int:
    """How many lines the file has: its newlines, and one more for a last line that has none."""
    count, last = 0, b"\n"
    with open_bytes(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def record_lines(path: Path) -> np.ndarray:
    """The 1-based numbers (int64) of the lines holding something other than whitespace, in file order."""
    found: list[np.ndarray] = []
    lines_before = 0  # newlines before the current chunk
    open_line_solid = False  # whether the line still open at the end of the last chunk holds a non-blank byte
    with open_bytes(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            data = np.frombuffer(chunk, dtype=np.uint8)
            solid = np.cumsum(~WHITESPACE[data], dtype=np.int32)  # non-blank bytes up to each position
            ends = np.flatnonzero(data == 10)
            if len(ends):
                upto = solid[ends]
                per_line = np.diff(upto, prepend=0)
                per_line[0] += open_line_solid
                found.append(lines_before + 1 + np.flatnonzero(per_line > 0))
                open_line_solid = bool(solid[-1] > upto[-1])
                lines_before += len(ends)
            else:
                open_line_solid = open_line_solid or bool(solid[-1] > 0)
    if open_line_solid:
        found.append(np.array([lines_before + 1]))
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
