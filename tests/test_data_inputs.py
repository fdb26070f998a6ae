"""Bad and unusual data inputs: each gets a clear error naming file, line or key, or loads with its counts.

One table of cases (files written to a temporary working directory, source options, expected outcome),
then the scorers on records whose answer is empty (valid data, unscorable by scorers that read answers).
"""

from __future__ import annotations

import gzip
import json
from typing import Any, NamedTuple

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deita_train.data.checks import source_problems
from deita_train.data.config import SourceConfig
from deita_train.data.sources import DataError, load_sources
from deita_train.errors import UserError

from .scoring_fixtures import alpaca, make_scorer, record


class Raises(NamedTuple):
    """`load_sources` raises a DataError whose message holds every one of `words` and none of `absent`."""

    words: tuple[str, ...]
    absent: tuple[str, ...] = ()


class Loads(NamedTuple):
    """`load_sources` gives these rows: provenance per row, skipped `where`s, and (some) column values."""

    source_file: list[str]
    source_row: list[int]
    skipped: list[str] = []
    columns: dict[str, list[Any]] = {}
    absent_columns: tuple[str, ...] = ()


class Problems(NamedTuple):
    """`source_problems(source, "pool.N")` of every source, in order ({cwd}: the working directory)."""

    messages: list[str]


def line(**record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


GOOD = line(instruction="Say hi", output="hi")
LATIN = b'{"instruction": "caf\xe9", "output": "x"}\n'  # "cafe" with e-acute in latin-1: not UTF-8
JSON_LATIN = b'[\n {"instruction": "a", "output": "b"},\n {"instruction": "caf\xe9", "output": "x"}\n]'
PREFERENCE = line(prompt="Q", chosen="good", rejected="bad")
PARQUET_BUFFER = pa.BufferOutputStream()
pq.write_table(pa.table({"instruction": ["Q"], "output": ["A"]}), PARQUET_BUFFER)
PARQUET = PARQUET_BUFFER.getvalue().to_pybytes()
EMPTY_PARQUET_BUFFER = pa.BufferOutputStream()
pq.write_table(pa.table({"instruction": pa.array([], pa.string())}), EMPTY_PARQUET_BUFFER)
EMPTY_PARQUET = EMPTY_PARQUET_BUFFER.getvalue().to_pybytes()
NOT_FOUND = "file not found: {path} (relative paths are read from the working directory {cwd})"

CASES: dict[str, tuple[dict[str, bytes], list[dict[str, Any]], Raises | Loads | Problems]] = {
    # 1. bytes that are not UTF-8
    "jsonl-not-utf8-raise": ({"a.jsonl": GOOD + LATIN}, [{"path": "a.jsonl"}], Raises((
        "a.jsonl (line 2): not UTF-8: byte 0xe9 at column 21 (byte offset 62)", "re-encode the file as UTF-8",
        "on_error: skip"))),
    "jsonl-not-utf8-skip": ({"a.jsonl": GOOD + LATIN + GOOD}, [{"path": "a.jsonl", "on_error": "skip"}],
                            Loads(["a.jsonl"] * 2, [1, 3], skipped=["line 2"])),
    "jsonl-gz-not-utf8-raise": ({"a.jsonl.gz": gzip.compress(LATIN)}, [{"path": "a.jsonl.gz"}],
                                Raises(("a.jsonl.gz (line 1): not UTF-8: byte 0xe9", "re-encode"))),
    "json-not-utf8-raise": ({"a.json": JSON_LATIN}, [{"path": "a.json"}], Raises((
        "a.json: not UTF-8 at line 3: byte 0xe9 at column 22 (byte offset 61)", "re-encode the file as UTF-8",
        "on_error: skip"))),
    "json-not-utf8-skip": ({"a.json": JSON_LATIN}, [{"path": "a.json", "on_error": "skip"}],
                           Loads(["a.json"], [0], skipped=["record 1"])),
    "utf8-bom-reads": ({"a.jsonl": b"\xef\xbb\xbf" + GOOD}, [{"path": "a.jsonl"}], Loads(["a.jsonl"], [1])),
    # 2. empty sources, and every record skipped
    "jsonl-empty": ({"a.jsonl": b""}, [{"path": "a.jsonl"}], Raises(("a.jsonl: no records (the file is empty)",),
                                                                     absent=("skipped",))),
    "jsonl-blank-lines": ({"a.jsonl": b"\n  \n\n"}, [{"path": "a.jsonl", "on_error": "skip"}],
                          Raises(("a.jsonl: no records (the file is empty)",), absent=("skipped",))),
    "json-empty": ({"a.json": b" \n"}, [{"path": "a.json"}], Raises(("a.json: no records (the file is empty)",))),
    "json-empty-list": ({"a.json": b"[]"}, [{"path": "a.json"}], Raises(("a.json: no records (the file holds an "
                                                                         "empty list)",))),
    "one-empty-among-others": ({"a.jsonl": GOOD, "b.jsonl": b""}, [{"path": "a.jsonl"}, {"path": "b.jsonl"}],
                               Raises(("b.jsonl: no records (the file is empty)",))),
    "all-skipped": ({"a.jsonl": b"{x\n" + line(instruction="", output="y")}, [{"path": "a.jsonl", "on_error": "skip"}],
                    Raises(("all 2 records", "were skipped (on_error: skip)", "a.jsonl (line 1): not valid JSON",
                            "; (line 2): field 'instruction' is empty"), absent=("file is empty",))),
    "fraction-keeps-none": ({"a.jsonl": GOOD * 3}, [{"path": "a.jsonl", "fraction": 0.1}],
                            Raises(("a.jsonl: fraction 0.1 of its 3 records keeps none",))),
    # 3. source options and paths
    "options-out-of-range": ({}, [{"path": "org/data", "limit": -3, "sample": 0, "fraction": 1.5}], Problems([
        "pool.0.limit: must be at least 1, got -3", "pool.0.sample: must be at least 1, got 0",
        "pool.0.fraction: must be in (0, 1], got 1.5", "pool.0: set one of limit, sample, fraction, not limit and "
        "sample and fraction"])),
    "options-fine": ({"a.jsonl": GOOD}, [{"path": "a.jsonl", "fraction": 1.0}, {"path": "org/data", "limit": 1}],
                     Problems([])),
    "local-looking-paths": ({"data/a.jsonl": GOOD}, [
        {"path": "data/mydata"}, {"path": "./mydata"}, {"path": "a/b/c"}, {"path": "x.parquet"},
        {"path": "x.csv.gz"}, {"path": "tatsu-lab/alpaca"}, {"path": "alpaca"}, {"path": "teknium/OpenHermes-2.5"},
    ], Problems([f"pool.{i}.path: {NOT_FOUND.format(path=p, cwd='{cwd}')}; fix the path, or give a hub dataset id "
                 "as `name` or `namespace/name`" for i, p in enumerate(["data/mydata", "./mydata", "a/b/c",
                                                                         "x.parquet", "x.csv.gz"])])),
    "local-looking-path-never-goes-to-the-hub": ({"data/a.jsonl": GOOD}, [{"path": "data/mydata"}],
                                                 Raises((NOT_FOUND.format(path="data/mydata", cwd="{cwd}"),))),
    "options-checked-on-load": ({"a.jsonl": GOOD}, [{"path": "a.jsonl", "sample": -2}],
                                Raises(("a.jsonl.sample: must be at least 1, got -2",))),
    # 4. a field typed differently across records
    "field-types-differ": ({"a.jsonl": line(instruction="a", output="b", score=1), "b.jsonl": line(
        instruction="a", output="b") + line(instruction="a", output="b", score="high")},
        [{"path": "a.jsonl"}, {"path": "b.jsonl"}], Raises((
            "field 'score' is int64 in a.jsonl (line 1) but string in b.jsonl (line 2)",
            "make 'score' one type in every record"))),
    "nested-field-types-differ": ({"a.json": json.dumps([{"instruction": "a", "output": "b", "meta": {"n": n}}
                                                         for n in (1, 2, "x")]).encode()},
                                  [{"path": "a.json"}], Raises((
                                      "field 'meta' is struct<n: int64> in a.json (record 0) but struct<n: string> "
                                      "in a.json (record 2)",))),
    "list-and-scalar": ({"a.jsonl": line(instruction="a", output="b", tags=["x"]) + line(
        instruction="a", output="b", tags="x")}, [{"path": "a.jsonl"}], Raises((
            "field 'tags' is list<item: string> in a.jsonl (line 1) but string in a.jsonl (line 2)",))),
    "int-and-float-mix": ({"a.jsonl": line(instruction="a", output="b", score=1) + line(
        instruction="a", output="b", score=2.5)}, [{"path": "a.jsonl"}],
        Loads(["a.jsonl"] * 2, [1, 2], columns={"score": [1.0, 2.5]})),
    # 5. empty answers load (user messages and system prompts must not be empty)
    "empty-outputs-load": ({"a.jsonl": line(instruction="Q", output="") + line(instruction="Q", output=" \n")
                            + line(conversations=[{"from": "human", "value": "Q"}, {"from": "gpt", "value": ""}])},
                           [{"path": "a.jsonl"}], Loads(["a.jsonl"] * 3, [1, 2, 3])),
    "empty-instruction-raises": ({"a.jsonl": line(instruction=" ", output="y")}, [{"path": "a.jsonl"}],
                                 Raises(("a.jsonl (line 1): field 'instruction' is empty",))),
    "empty-user-message-raises": ({"a.jsonl": line(messages=[{"role": "user", "content": ""},
                                                             {"role": "assistant", "content": "A"}])},
                                  [{"path": "a.jsonl"}], Raises(("a.jsonl (line 1): message 0 (user): empty content",))),
    # 6. provenance: file name and line/record/row, after skips; no `source` column unless a record has one
    "provenance-after-skips": ({"a.jsonl": GOOD + b"\n" + b"{x\n" + GOOD, "b.json": json.dumps(
        [{"instruction": "a", "output": "b"}, {"instruction": ""}, {"instruction": "c", "output": "d"}]).encode()},
        [{"path": "a.jsonl", "on_error": "skip"}, {"path": "b.json", "on_error": "skip"}],
        Loads(["a.jsonl", "a.jsonl", "b.json", "b.json"], [1, 4, 0, 2], skipped=["line 3", "record 1"],
              columns={"id": [0, 1, 2, 3]}, absent_columns=("source",))),
    "provenance-absolute-path-keeps-name-only": ({"sub/a.jsonl": GOOD}, [{"path": "{cwd}/sub/a.jsonl"}],
                                                 Loads(["a.jsonl"], [1])),
    "provenance-hub": ({}, [{"path": "tatsu-lab/alpaca", "limit": 2}],
                       Loads(["tatsu-lab/alpaca:train"] * 2, [0, 1])),
    "record-source-field-is-kept": ({"a.jsonl": line(instruction="a", output="b", source="wiki")},
                                    [{"path": "a.jsonl"}], Loads(["a.jsonl"], [1], columns={"source": ["wiki"]})),
    # 7. csv and compressed parquet; lines the builder does not take for blank
    "csv-cells-stay-text": ({"a.csv": b'instruction,input,output\nSay NA,,\n"Two\nlines",null,x\n'}, [{"path": "a.csv"}],
                            Loads(["a.csv"] * 2, [0, 1], columns={"input": ["", "null"], "output": ["", "x"]})),
    "csv-gz": ({"a.csv.gz": gzip.compress(b"prompt,completion\nQ,A\n")}, [{"path": "a.csv.gz"}], Loads(["a.csv.gz"], [0])),
    "csv-empty": ({"a.csv": b""}, [{"path": "a.csv"}], Raises(("a.csv: no records (the file is empty)",))),
    "csv-header-only": ({"a.csv": b"instruction,output\n"}, [{"path": "a.csv"}],
                        Raises(("a.csv: no records (the file has a header only)",))),
    "csv-bad-record": ({"a.csv": b"instruction,output\nQ,A\n,A\n"}, [{"path": "a.csv"}],
                       Raises(("a.csv (row 1): field 'instruction' is empty",))),
    "parquet-gz": ({"a.parquet.gz": gzip.compress(PARQUET)}, [{"path": "a.parquet.gz"}], Loads(["a.parquet.gz"], [0])),
    "parquet-no-rows": ({"a.parquet": EMPTY_PARQUET}, [{"path": "a.parquet"}],
                        Raises(("a.parquet: no records (the file has no rows)",))),
    "form-feed-line-is-blank": ({"a.jsonl": GOOD + b"\x0c\n" + GOOD}, [{"path": "a.jsonl"}], Loads(["a.jsonl"] * 2, [1, 3])),
    "json-not-a-list": ({"a.json": b'{"instruction": "a", "output": "b"}'}, [{"path": "a.json"}],
                        Raises(("a.json: a .json source must hold a list of records, got dict",))),
    "json-list-of-strings": ({"a.json": b'["a", "b"]'}, [{"path": "a.json"}],
                             Raises(("a.json (record 0): a record must be a JSON object, got str",))),
}
HUB = {"tatsu-lab/alpaca": [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]}


REAL_LOAD_DATASET = datasets.load_dataset


def fake_load_dataset(path: str, name: str | None = None, split: str = "train", **options: Any) -> datasets.Dataset:
    """The hub, faked: the builders of local files (json, parquet, csv) are the real ones."""
    if path in ("json", "parquet", "csv"):
        return REAL_LOAD_DATASET(path, name, split=split, **options)
    assert path in HUB, f"the hub was asked for {path!r}"
    return datasets.Dataset.from_list(HUB[path])


@pytest.mark.parametrize("case", list(CASES))
def test_data_inputs(case, tmp_path, monkeypatch):
    files, options, expected = CASES[case]
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    cwd = str(tmp_path)
    sources = [SourceConfig(**{**o, "path": o["path"].format(cwd=cwd)}) for o in options]
    if isinstance(expected, Problems):
        got = [p for i, source in enumerate(sources) for p in source_problems(source, f"pool.{i}")]
        assert got == [m.format(cwd=cwd) for m in expected.messages]
    elif isinstance(expected, Raises):
        with pytest.raises(DataError) as error:
            load_sources(sources, seed=0)
        assert isinstance(error.value, UserError)
        message = str(error.value)
        for words in expected.words:
            assert words.format(cwd=cwd) in message
        assert not any(words in message for words in expected.absent), message
    else:
        pool, report = load_sources(sources, seed=0)
        assert pool["source_file"] == expected.source_file
        assert pool["source_row"] == expected.source_row
        assert [s["where"] for source in report.sources for s in source.skipped] == expected.skipped
        for column, values in expected.columns.items():
            assert pool[column] == values
        assert not set(expected.absent_columns) & set(pool.column_names)


def test_preference_rows_keep_provenance(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(PREFERENCE + b"\n" + PREFERENCE)
    pairs, _ = load_sources([SourceConfig(path=str(path))], seed=0, preference=True)
    assert pairs.column_names == ["id", "prompt", "chosen", "rejected", "source_file", "source_row"]
    assert pairs["source_file"] == ["pairs.jsonl"] * 2 and pairs["source_row"] == [1, 3]


EMPTY_ANSWERS = [
    record(0, [("Name a color.", "")]),
    record(1, [("Name a color.", " \n ")]),
    record(2, [("Say one.", "One."), ("Say two.", "")]),
    alpaca(3, "Name a color.", "", ""),
    record(4, [("Name a color.", "Blue.")]),
]


@pytest.mark.parametrize(("kind", "options"), [
    ("deita_quality", {}), ("ifd", {}), ("ifd", {"convention": "cherry"}), ("ppl", {}), ("loss", {}),
])
def test_scorers_reading_the_answer_report_empty_answers(tiny_model, kind, options):
    scorer = make_scorer(kind, tiny_model, **options)
    scores = scorer.score_batch(EMPTY_ANSWERS)
    assert [(s.value, s.reason) for s in scores[:4]] == [(None, "empty answer")] * 4
    assert scores[4].reason is None and len(scores[4].value) == 1
    assert [s.reason for s in scorer.score_batch(EMPTY_ANSWERS[:1])] == ["empty answer"]  # a batch with no pass


def test_reward_reports_empty_answers(tiny_reward_model):  # noqa: F811
    scorer = make_scorer("reward", tiny_reward_model)
    scores = scorer.score_batch(EMPTY_ANSWERS)
    assert [(s.value, s.reason) for s in scores[:4]] == [(None, "empty answer")] * 4
    assert isinstance(scores[4].value, float)
    (alone,) = scorer.score_batch(EMPTY_ANSWERS[4:])
    assert alone.value == pytest.approx(scores[4].value, abs=1e-5)
    assert [s.reason for s in scorer.score_batch(EMPTY_ANSWERS[:1])] == ["empty answer"]


def test_scorers_not_reading_the_answer_still_score_it(tiny_model):
    """Complexity reads the instruction, length counts tokens (0 for the answer), embedding embeds the conversation
    (its instruction still places it among the others)."""
    from deita_train.scoring import SCORERS, ScoringContext

    complexity = make_scorer("deita_complexity", tiny_model).score_batch(EMPTY_ANSWERS)
    assert all(s.reason is None and len(s.value) == len(r["messages"]) // 2
               for s, r in zip(complexity, EMPTY_ANSWERS, strict=True))
    embedding = make_scorer("embedding", tiny_model).score_batch(EMPTY_ANSWERS)
    assert all(s.reason is None and s.value.shape == (64,) for s in embedding)
    length = SCORERS.get("length", "test")
    scorer = length(length.config_class(type="length", model=str(tiny_model)), ScoringContext())
    scorer.load()
    counts = scorer.score_batch(EMPTY_ANSWERS[:1])[0].value
    assert counts == [float(len(scorer.tokenizer("Name a color.", add_special_tokens=False)["input_ids"]))]
