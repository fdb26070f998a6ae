"""Loading the pool as Arrow: the same rows as reading every record in Python, `source_row` as the file's line
despite blank lines, sources cached across calls and processes (and rebuilt when the file or an option changes),
worker processes, preference sources, fields across sources."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deita_train.data import canonical, line_numbers
from deita_train.data.config import SourceConfig
from deita_train.data.formats import adapt, original_fields
from deita_train.data.pool_cache import pools_root
from deita_train.data.sources import DataError, load_sources

from .conftest import REPO

ALPACA = [{"instruction": f"Question {i}?", "input": "some context" if i % 3 == 0 else "", "output": f"Answer {i}.",
           "category": ["qa", "math"][i % 2]} for i in range(12)]
SHAREGPT = [{"conversations": [{"from": "human", "value": f"Hi {i}"}, {"from": "gpt", "value": f"Hello {i}"},
                               {"from": "human", "value": "More?"}, {"from": "gpt", "value": "Sure."}],
             "lang": "en"} for i in range(7)]
MESSAGES = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}"},
                          {"role": "assistant", "content": f"A{i}"}], "score": i / 2} for i in range(5)]
PAIRS = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]


def jsonl(records: list[dict], blank_every: int = 0) -> bytes:
    lines = [json.dumps(r) + "\n" + ("\n  \n" if blank_every and i % blank_every == 0 else "")
             for i, r in enumerate(records)]
    return "".join(lines).encode()


def python_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(number, record) as the list-based loader read them: JSONL lines 1-based, other files' records 0-based."""
    name = path.name.removesuffix(".gz")
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    if name.endswith(".jsonl"):
        return [(n, json.loads(line)) for n, line in enumerate(data.splitlines(), start=1) if line.strip()]
    if name.endswith(".json"):
        return list(enumerate(json.loads(data)))
    if name.endswith(".parquet"):
        return list(enumerate(pq.read_table(path).to_pylist()))
    return list(enumerate(csv.DictReader(io.StringIO(data.decode(), newline=""))))


def reference_pool(paths: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of the list-based loader: each record adapted on its own, rows as dicts, missing fields null."""
    rows = []
    for path in paths:
        for number, record in python_records(path):
            _, fields = adapt(record, "auto")
            rows.append({"messages": fields["messages"], "source_file": path.name, "source_row": number}
                        | original_fields(record))
    columns = ["id", *dict.fromkeys(key for row in rows for key in row)]
    return columns, [{c: i if c == "id" else row.get(c) for c in columns} for i, row in enumerate(rows)]


def mixed_pool(folder: Path) -> list[Path]:
    """Alpaca JSONL (with blank lines), ShareGPT .json, messages .jsonl.gz, Alpaca CSV, prompt/completion parquet."""
    (folder / "alpaca.jsonl").write_bytes(jsonl(ALPACA, blank_every=4))
    (folder / "sharegpt.json").write_text(json.dumps(SHAREGPT, indent=1))
    (folder / "messages.jsonl.gz").write_bytes(gzip.compress(jsonl(MESSAGES)))
    with open(folder / "alpaca.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output", "note"])
        writer.writeheader()
        writer.writerows([{"instruction": f"Row {i}", "input": "", "output": "NA" if i == 1 else f"out\n{i}",
                           "note": "null"} for i in range(6)])
    pq.write_table(pa.Table.from_pylist([{"prompt": f"p{i}", "completion": f"c{i}", "id": 100 + i}
                                         for i in range(3)]), folder / "pc.parquet")
    return [folder / name for name in ("alpaca.jsonl", "sharegpt.json", "messages.jsonl.gz", "alpaca.csv",
                                       "pc.parquet")]


class MapSpy:
    """Counts `Dataset.map` calls running the canonicalization."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        original = datasets.Dataset.map

        def spy(dataset, function=None, *args, **kwargs):
            self.calls += function is canonical.canonical_batch
            return original(dataset, function, *args, **kwargs)

        monkeypatch.setattr(datasets.Dataset, "map", spy)


@pytest.fixture
def map_spy(monkeypatch) -> MapSpy:
    return MapSpy(monkeypatch)


def test_same_rows_as_reading_every_record_in_python(tmp_path, map_spy):
    paths = mixed_pool(tmp_path)
    pool, report = load_sources([SourceConfig(path=str(p)) for p in paths], seed=0)
    columns, rows = reference_pool(paths)
    assert pool.column_names == columns
    assert pool.to_list() == rows
    assert pool["id"] == list(range(len(rows)))
    assert pool["output"][12 + 7 + 5 + 1] == "NA" and pool["note"][12 + 7 + 5] == "null"  # csv cells stay text
    assert [(s.read, s.kept, s.skipped) for s in report.sources] == [(12, 12, []), (7, 7, []), (5, 5, []),
                                                                     (6, 6, []), (3, 3, [])]
    assert map_spy.calls == 5  # every source went through the builder and the batched map, none line by line
    assert all(Path(f["filename"]).is_relative_to(pools_root()) for f in pool.cache_files)  # memory-mapped


def test_worker_processes_give_the_same_rows(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA * 20, blank_every=7) + b'{"instruction": "", "output": "x"}\n')
    source = SourceConfig(path=str(path), on_error="skip")
    one, one_report = load_sources([source], seed=0)
    monkeypatch.setattr(canonical, "MIN_ROWS_FOR_PROCESSES", 1)
    monkeypatch.setattr(canonical, "MAX_PROCESSES", 2)
    os.utime(path)  # a new modification time: not the cached entry
    assert canonical.processes_for(10) == min(os.cpu_count() or 1, 2)
    two, two_report = load_sources([source], seed=0)
    assert two.to_list() == one.to_list() and two_report == one_report
    assert one_report.sources[0].skipped == [{"where": f"line {len(path.read_bytes().splitlines())}",
                                              "problem": "field 'instruction' is empty"}]


def test_worker_processes_leave_tokenizers_parallel(tmp_path, monkeypatch):
    """datasets sets TOKENIZERS_PARALLELISM=false for its `map` workers and leaves it set in the C environment,
    where this process's Rust tokenizers read it; loading a pool puts it back as it was."""
    import ctypes

    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA * 20))
    monkeypatch.setattr(canonical, "MIN_ROWS_FOR_PROCESSES", 1)
    monkeypatch.setattr(canonical, "MAX_PROCESSES", 2)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    load_sources([SourceConfig(path=str(path))], seed=0)
    assert "TOKENIZERS_PARALLELISM" not in os.environ and getenv(b"TOKENIZERS_PARALLELISM") is None


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz"])
def test_blank_lines_keep_source_row_as_the_line(tmp_path, name, map_spy):
    data = b"\n" + jsonl(ALPACA[:3]) + b" \t\r\n\n" + jsonl(ALPACA[3:5]) + b"\n\n" + json.dumps(ALPACA[5]).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    pool, _ = load_sources([SourceConfig(path=str(path))], seed=0)
    lines = [n for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]  # lines end at "\n" alone
    assert pool["source_row"] == lines == [2, 3, 4, 7, 8, 11]
    assert pool["output"] == [r["output"] for r in ALPACA[:6]]
    assert map_spy.calls == 1  # read by the builder, not the line reader


def test_record_lines_across_chunk_boundaries(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = bytes(rng.choice(list(b"ab \t\n\r"), size=5000, p=[0.3, 0.1, 0.2, 0.1, 0.25, 0.05]))
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    lines = data.split(b"\n")[: -1 if data.endswith(b"\n") else None]
    expected = [n for n, line in enumerate(lines, start=1) if line.strip()]
    for chunk in (1, 2, 7, 64, 1 << 20):
        monkeypatch.setattr(line_numbers, "CHUNK_BYTES", chunk)
        assert line_numbers.record_lines(path).tolist() == expected
        assert line_numbers.count_lines(path) == len(lines)


def test_a_second_load_comes_from_the_cache(tmp_path, map_spy):
    paths = mixed_pool(tmp_path)
    sources = [SourceConfig(path=str(p), on_error="skip") for p in paths]
    first, first_report = load_sources(sources, seed=0)
    calls = map_spy.calls
    second, second_report = load_sources(sources, seed=0)
    assert map_spy.calls == calls  # no source canonicalized again
    assert second.to_list() == first.to_list() and second_report == first_report
    assert second.column_names == first.column_names and second.features == first.features


def test_another_process_loads_the_cached_sources(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA) + b"{broken\n")
    source = SourceConfig(path=str(path), on_error="skip")
    pool, report = load_sources([source], seed=0)
    script = f"""
import datasets, json
from deita_train.data.config import SourceConfig
from deita_train.data.sources import load_sources

def refuse(*args, **kwargs):
    raise AssertionError("read the source again")

datasets.Dataset.map = datasets.load_dataset = datasets.Dataset.from_generator = refuse
pool, report = load_sources([SourceConfig(path={str(path)!r}, on_error="skip")], seed=0)
print(json.dumps({{"rows": pool.to_list(), "report": report.to_dict()}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_DATASETS_CACHE": str(datasets.config.HF_DATASETS_CACHE)})
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"rows": pool.to_list(), "report": report.to_dict()}
    assert report.sources[0].skipped[0]["where"] == f"line {len(ALPACA) + 1}"


def test_a_changed_file_or_option_is_read_again(tmp_path, map_spy):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA))

    def load(**options: Any) -> list[str]:
        return load_sources([SourceConfig(path=str(path), **options)], seed=0)[0]["output"]

    def calls_after(change) -> tuple[int, Any]:
        before = map_spy.calls
        result = change()
        return map_spy.calls - before, result

    assert calls_after(load) == (1, [r["output"] for r in ALPACA])
    assert calls_after(load)[0] == 0
    path.write_bytes(jsonl(ALPACA[:5]))  # new content
    assert calls_after(load) == (1, [r["output"] for r in ALPACA[:5]])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # same content, new mtime
    assert calls_after(load)[0] == 1
    assert calls_after(lambda: load(limit=2)) == (1, [r["output"] for r in ALPACA[:2]])
    assert calls_after(lambda: load(format="alpaca"))[0] == 1
    assert calls_after(lambda: load(on_error="skip"))[0] == 1
    assert calls_after(lambda: load(limit=2))[0] == 0


def test_the_seed_counts_only_when_rows_are_drawn(tmp_path, map_spy):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA))
    load_sources([SourceConfig(path=str(path))], seed=0)
    load_sources([SourceConfig(path=str(path))], seed=1)
    assert map_spy.calls == 1
    first = load_sources([SourceConfig(path=str(path), sample=4)], seed=0)[0]["source_row"]
    second = load_sources([SourceConfig(path=str(path), sample=4)], seed=1)[0]["source_row"]
    assert map_spy.calls == 3 and first != second


def test_preference_sources(tmp_path, map_spy):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl(PAIRS, blank_every=2) + jsonl([{"instruction": "Q", "output": "A", "id": 7}]))
    source = SourceConfig(path=str(path), on_error="skip")
    pairs, report = load_sources([source], seed=0, preference=True)
    assert pairs.column_names == ["id", "prompt", "chosen", "rejected", "source_file", "source_row"]
    assert pairs["chosen"] == [[{"role": "assistant", "content": f"good {i}"}] for i in range(4)]
    assert pairs["source_row"] == [1, 4, 5, 8]
    assert report.sources[0].skipped == [{"where": "line 9",
                                          "problem": "missing field 'prompt' (fields: id, instruction, output)"}]
    again, again_report = load_sources([source], seed=0, preference=True)
    assert again.to_list() == pairs.to_list() and again_report == report and map_spy.calls == 1
    conversations, _ = load_sources([source], seed=0)  # the same file as conversations: its own entry
    assert len(conversations) == 5 and map_spy.calls == 2


def test_fields_across_sources(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl([{"instruction": "a", "output": "b", "score": 1, "meta": {"n": 1}}]))
    (tmp_path / "b.jsonl").write_bytes(jsonl([{"instruction": "c", "output": "d", "score": 2.5, "meta": {"m": "x"},
                                               "extra": [1, 2]}]))
    pool, _ = load_sources([SourceConfig(path=str(tmp_path / n)) for n in ("a.jsonl", "b.jsonl")], seed=0)
    assert pool["score"] == [1.0, 2.5] and pool["extra"] == [None, [1, 2]]
    assert pool["meta"] == [{"n": 1, "m": None}, {"n": None, "m": "x"}]
    assert pool.features["id"] == datasets.Value("int64")


def test_dates_stay_the_strings_they_were(tmp_path):
    """pyarrow's JSON reader would read them as timestamps: such a file is read line by line."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl([{"instruction": "a", "output": "b", "created": "2021-01-01"},
                            {"instruction": "c", "output": "d", "created": "2021-01-02T10:00:00Z"}]))
    pool, _ = load_sources([SourceConfig(path=str(path))], seed=0)
    assert pool["created"] == ["2021-01-01", "2021-01-02T10:00:00Z"]


def test_a_hub_source_is_read_once(tmp_path, monkeypatch):
    asked = []

    def fake_hub(path, name=None, split="train", **options):
        asked.append(path)
        return datasets.Dataset.from_list([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    source = SourceConfig(path="org/test-pool-loading", sample=2)
    first, _ = load_sources([source], seed=3)
    second, _ = load_sources([source], seed=3)
    assert asked == ["org/test-pool-loading"] and second.to_list() == first.to_list()
    assert first["source_file"] == ["org/test-pool-loading:train"] * 2


def test_errors_are_not_cached(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA[:2]) + b'{"instruction": "", "output": "x"}\n')
    for _ in range(2):
        with pytest.raises(DataError, match=r"a.jsonl \(line 3\): field 'instruction' is empty"):
            load_sources([SourceConfig(path=str(path))], seed=0)


@pytest.mark.parametrize("name", ["a.json", "a.jsonl"])
def test_floats_keep_their_precision(tmp_path, name):
    records = [{"instruction": "a", "output": "b", "score": 0.12345678901234566, "tiny": 1e-300, "big": 2**62}]
    (tmp_path / name).write_text(json.dumps(records) if name == "a.json" else jsonl(records).decode())
    pool, _ = load_sources([SourceConfig(path=str(tmp_path / name))], seed=0)
    assert (pool["score"], pool["tiny"], pool["big"]) == ([0.12345678901234566], [1e-300], [2**62])


def test_processes_loading_a_new_source_together_build_it_once(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA * 50))
    script = f"""
import json, sys
from deita_train.data import sources
from deita_train.data.config import SourceConfig

built = []
build_source = sources.build_source
sources.build_source = lambda *args: built.append(1) or build_source(*args)
pool, _ = sources.load_sources([SourceConfig(path={str(path)!r})], seed=0)
print(json.dumps({{"built": len(built), "rows": len(pool), "first": pool[0]["output"]}}))
"""
    env = {**os.environ, "HF_DATASETS_CACHE": str(datasets.config.HF_DATASETS_CACHE)}
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=REPO, env=env) for _ in range(3)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [0, 0, 1]
    assert all(r["rows"] == len(ALPACA) * 50 and r["first"] == ALPACA[0]["output"] for r in results)


def test_the_line_reader_follows_field_types_across_batches(tmp_path):
    """A file with a broken line is read line by line; a field's type is followed over every row, not the first
    batch only."""
    records = [{"instruction": f"q{i}", "output": "a", "score": 2.5 if i == 2200 else i} for i in range(2500)]
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"{broken\n" + jsonl(records))
    pool, report = load_sources([SourceConfig(path=str(path), on_error="skip")], seed=0)
    assert pool.features["score"] == datasets.Value("float64") and pool["score"][2200] == 2.5
    assert len(pool) == 2500 and pool["source_row"][:2] == [2, 3] and report.sources[0].read == 2501
    records[2200]["score"] = "high"
    path.write_bytes(b"{broken\n" + jsonl(records))
    with pytest.raises(DataError, match=r"field 'score' is int64 in \S*a.jsonl \(line 2\) but string in \S*a.jsonl "
                                        r"\(line 2202\)"):
        load_sources([SourceConfig(path=str(path), on_error="skip")], seed=0)


def test_cached_pool_is_the_canonical_files_moved_not_copied(tmp_path, monkeypatch):
    """The entry holds the `map` workers' own Arrow files (no copy of the pool), in record batches of `BATCH_ROWS`;
    a source with skipped rows is written once without them."""
    monkeypatch.setattr(canonical, "MIN_ROWS_FOR_PROCESSES", 1)
    monkeypatch.setattr(canonical, "MAX_PROCESSES", 2)
    monkeypatch.setattr(canonical, "BATCH_ROWS", 7)
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA * 5))
    pool, _ = load_sources([SourceConfig(path=str(path))], seed=0)
    files = list(dict.fromkeys(Path(f["filename"]).relative_to(pools_root()).parts for f in pool.cache_files))
    assert files[0] == ("ids", f"{len(pool)}.arrow")  # the ids, memory-mapped too
    assert sorted(name for *_, name in files[1:]) == [f"data-0000{i}.arrow" for i in range(min(os.cpu_count() or 1, 2))]
    assert {batch.num_rows for batch in pool.data.table.to_batches()} <= {7, *range(1, 7)}
    path.write_bytes(jsonl(ALPACA * 5) + b'{"instruction": "", "output": "x"}\n')
    skipped, report = load_sources([SourceConfig(path=str(path), on_error="skip")], seed=0)
    assert list(dict.fromkeys(Path(f["filename"]).name for f in skipped.cache_files)) == [f"{len(skipped)}.arrow",
                                                                                          "data-00000.arrow"]
    assert skipped.to_list() == pool.to_list() and len(report.sources[0].skipped) == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_each_builder_writes_record_batches_of_batch_rows(tmp_path, monkeypatch, suffix):
    """The builders' own Arrow file is written in record batches of `BATCH_ROWS` rows, not their default 1,000:
    opening it, or reading a column, touches the pages around each batch."""
    from deita_train.data import reading

    monkeypatch.setattr(reading, "BATCH_ROWS", 7)
    records = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(40)]
    path = tmp_path / f"a{suffix}"
    if suffix == ".jsonl":
        path.write_bytes(jsonl(records))
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["instruction", "output"])
            writer.writeheader()
            writer.writerows(records)
    raw = reading.read_source(SourceConfig(path=str(path)), tmp_path / "build")
    assert [batch.num_rows for batch in raw.dataset.data.table.to_batches()] == [7] * 5 + [5]
    assert raw.dataset.to_list() == records


def test_builders_decode_with_the_system_allocator_unless_the_user_chose_one(tmp_path, monkeypatch):
    """mimalloc kept what the decoder threads freed (a parquet read grew with the pool): the builders run with the
    system allocator, and the default comes back after; `ARROW_DEFAULT_MEMORY_POOL` set by the user is left alone."""
    from deita_train.data import reading

    default = pa.default_memory_pool().backend_name
    used = []
    real = datasets.load_dataset

    def recording(*args, **kwargs):
        used.append(pa.default_memory_pool().backend_name)
        return real(*args, **kwargs)

    monkeypatch.setattr(reading.datasets, "load_dataset", recording)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ALPACA))
    reading.read_source(SourceConfig(path=str(path)), tmp_path / "one")
    assert used == ["system"] and pa.default_memory_pool().backend_name == default
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", default)
    reading.read_source(SourceConfig(path=str(path)), tmp_path / "two")
    assert used == ["system", default]
