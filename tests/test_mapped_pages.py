"""Handing back mapped pages (`data/mapped_pages.py`): resident memory drops, the data read afterwards is the same,
and nothing but `.arrow` file mappings is touched."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from deita_train.data.mapped_pages import arrow_file_mappings, release, released_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


def resident_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


@pytest.fixture
def mapped(tmp_path):
    """A ~200 MB saved dataset, memory-mapped, its text column read once (so its pages are resident)."""
    rng = np.random.default_rng(0)
    text = ["".join(rng.choice(list("abcdefgh"), size=2000)) for _ in range(1000)] * 100
    Dataset.from_dict({"text": text, "n": np.arange(len(text))}).save_to_disk(str(tmp_path / "d"))
    dataset = load_from_disk(str(tmp_path / "d"))
    expected = dataset[12345]["text"]
    return dataset, expected


def test_release_drops_the_pages_and_keeps_the_data(mapped):
    dataset, expected = mapped
    column = dataset.data.column("text")
    before = resident_kb()
    total = sum(int(np.frombuffer(chunk.buffers()[2], dtype=np.uint8).sum() > 0) * chunk.buffers()[2].size
                for chunk in column.chunks)  # reads every byte: every page of the strings becomes resident
    touched = resident_kb()
    assert touched - before > 100_000 and total > 190_000_000
    mappings = arrow_file_mappings()
    assert mappings and all(end > start for start, end in mappings)
    release(mappings)
    assert resident_kb() < touched - 100_000
    assert dataset[12345]["text"] == expected and dataset.data.column("n").to_numpy()[-1] == 99_999


def test_released_pages_in_the_background_while_reading(mapped):
    dataset, expected = mapped
    with released_pages(seconds=0.01):
        texts = [dataset.data.column("text")[i].as_py() for i in range(0, 100_000, 997)]
    assert texts[0] == dataset[0]["text"] and dataset[12345]["text"] == expected and len(texts) == 101
