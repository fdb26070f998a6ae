"""Handing back the pages of memory-mapped Arrow files once a pass has read them, so a process's resident memory
stays flat in the pool's size.

Reading rows of a memory-mapped pool maps its file pages into the process, and the kernel's fault-around maps the
neighbouring pages already in the page cache too: gathering 23,000 random rows of a 10M-row pool mapped about 2 GB
of its two long text columns. Those pages are clean and shared with the page cache, but they count as the
process's RSS until it unmaps them. `release` calls `madvise(MADV_DONTNEED)` on the process's mappings of
`.arrow` files between parts of a pass: the mapping stays valid, and a later read faults the pages back in from
the page cache (or the disk). Only pages inside read-only mappings of `.arrow` files are released: never
anonymous memory, whose contents `MADV_DONTNEED` would discard, nor a library's relocated pages. On other
platforms it does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

RELEASE_SECONDS = 0.5  # between two hand-backs while `released_pages` runs


@cache
def libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    return ctypes.CDLL(None, use_errno=True)


def arrow_file_mappings() -> list[tuple[int, int]]:
    """(start, end) of each read-only mapping of an `.arrow` file in this process (from /proc/self/maps)."""
    if libc() is None:
        return []
    spans = []
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip().endswith(".arrow") and "w" not in fields[1]:
                start, end = (int(part, 16) for part in fields[0].split("-"))
                spans.append((start, end))
    return spans


def release(mappings: list[tuple[int, int]]) -> None:
    """Unmap every page of `mappings` (from `arrow_file_mappings`): the files stay mapped, pages fault back in when
    read again."""
    for start, end in mappings:
        libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED)


@contextmanager
def released_pages(seconds: float = RELEASE_SECONDS) -> Iterator[None]:
    """While the block runs, hand back every mapped `.arrow` page each `seconds` from a background thread: for
    passes whose reading happens inside `datasets` (building, canonicalizing, saving a pool), where no hook sees the
    batches. Safe at any moment: the pages are clean file pages, and a reader faults them back in."""
    if libc() is None:
        yield
        return
    done = threading.Event()

    def hand_back() -> None:
        while not done.wait(seconds):
            release(arrow_file_mappings())

    thread = threading.Thread(target=hand_back, name="released-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release(arrow_file_mappings())

