"""Every format adapter on good and bad records, and source reading with on_error raise/skip."""

from __future__ import annotations

import gzip
import json

import pytest

from deita_train.data.config import SourceConfig
from deita_train.data.conversation import RecordError, turns
from deita_train.data.formats import adapt
from deita_train.data.sources import DataError, load_sources

GOOD = {
    "alpaca": {"instruction": "Add.", "input": "2+2", "output": "4", "system": "Be brief."},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    "messages": {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                              {"role": "assistant", "content": "A"}]},
    "prompt_completion": {"prompt": "Q", "completion": "A"},
    "preference": {"prompt": "Q", "chosen": "good", "rejected": "bad"},
}


def test_alpaca_joins_instruction_and_input_and_keeps_system():
    _, fields = adapt(GOOD["alpaca"], "alpaca")
    assert fields["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add.\n2+2"},
        {"role": "assistant", "content": "4"},
    ]


@pytest.mark.parametrize("name", sorted(GOOD))
def test_auto_detects_every_format(name):
    used, fields = adapt(GOOD[name], "auto")
    assert used == name
    assert fields["messages"][-1]["role"] == "assistant"


def test_preference_keeps_prompt_and_both_answers_as_messages():
    record = {"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "A"}],
              "rejected": "B"}
    _, fields = adapt(record, "preference")
    assert fields["prompt"] == [{"role": "user", "content": "Q"}]
    assert fields["chosen"] == [{"role": "assistant", "content": "A"}]
    assert fields["rejected"] == [{"role": "assistant", "content": "B"}]
    assert fields["messages"] == fields["prompt"] + fields["chosen"]


BAD = [
    ("alpaca", {"instruction": "x"}, "missing field 'output'"),
    ("alpaca", {"instruction": "  ", "output": "y"}, "'instruction' is empty"),
    ("alpaca", {"instruction": 3, "output": "y"}, "must be a string"),
    ("sharegpt", {"conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]},
     "role 'assistant' where 'user' belongs"),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "A"}]}, "unknown speaker 'robot'"),
    ("messages", {"messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q2"}]},
     "role 'user' where 'assistant' belongs"),
    ("messages", {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "A"}]},
     "message 0 (user): empty content"),
    ("messages", {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Q"},
                               {"role": "assistant", "content": "A"}]}, "message 0 (system): empty content"),
    ("messages", {"messages": [{"role": "user", "content": ["Q"]}, {"role": "assistant", "content": "A"}]},
     "content must be a string"),
    ("messages", {"messages": [{"role": "user", "content": "Q"}]}, "last message must be the assistant's"),
    ("prompt_completion", {"prompt": "Q"}, "missing field 'completion'"),
    ("preference", {"prompt": "Q", "chosen": "A"}, "missing field 'rejected'"),
    ("preference", {"prompt": "Q", "chosen": "A", "rejected": 7}, "must be a string or a list of messages"),
    ("auto", {"text": "hello"}, "cannot detect the format"),
]


@pytest.mark.parametrize(("name", "record", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_records_say_what_is_wrong(name, record, message):
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        adapt(record, name)


def test_turns_carry_history_and_system():
    _, fields = adapt({"messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}, "messages")
    second = turns(fields["messages"])[1]
    assert (second.system, second.user, second.assistant) == ("S", "Q2", "A2")
    assert second.history == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_bad_json_line_is_named_on_raise(tmp_path):
    path = write_jsonl(tmp_path / "pool.jsonl", [json.dumps(GOOD["alpaca"]), "{not json"])
    with pytest.raises(DataError, match=r"pool.jsonl \(line 2\): not valid JSON"):
        load_sources([SourceConfig(path=str(path))], seed=0)


def test_skip_lists_every_bad_record_and_keeps_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "pool.jsonl", [
        json.dumps(GOOD["alpaca"]), "{not json", json.dumps({"instruction": "", "output": "x"}),
        json.dumps(GOOD["sharegpt"]),
    ])
    pool, report = load_sources([SourceConfig(path=str(path), on_error="skip")], seed=0)
    assert len(pool) == 2 and pool["id"] == [0, 1]
    assert [s["where"] for s in report.sources[0].skipped] == ["line 2", "line 3"]
    assert report.sources[0].read == 4 and report.sources[0].kept == 2


def test_sources_mix_in_order_with_limits_gzip_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_jsonl(tmp_path / "a.jsonl", [json.dumps(GOOD["alpaca"] | {"output": f"o{i}"}) for i in range(10)])
    gz = tmp_path / "b.json.gz"
    with gzip.open(gz, "wt") as handle:
        json.dump([GOOD["sharegpt"]] * 5, handle)
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": f"q{i}", "completion": "a", "id": f"x{i}"} for i in range(4)]), parquet)
    pool, _ = load_sources([
        SourceConfig(path=str(jsonl), limit=3),
        SourceConfig(path=str(gz), fraction=0.4),
        SourceConfig(path=str(parquet), sample=2),
    ], seed=1)
    assert pool["id"] == list(range(7))
    assert pool["source_file"] == ["a.jsonl"] * 3 + ["b.json.gz"] * 2 + ["c.parquet"] * 2
    assert pool["source_row"][:3] == [1, 2, 3]  # JSONL lines are 1-based; .json records and parquet rows 0-based
    assert all(0 <= r < 5 for r in pool["source_row"][3:5]) and all(0 <= r < 4 for r in pool["source_row"][5:])
    assert pool["source_id"][5:] == [f"x{r}" for r in pool["source_row"][5:]]
    assert pool["output"][:3] == ["o0", "o1", "o2"] and pool["output"][3:] == [None] * 4
    assert all(s.startswith("x") for s in pool["source_id"][5:])


def test_sampling_is_seeded(tmp_path):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [json.dumps(GOOD["alpaca"] | {"output": f"o{i}"}) for i in range(50)])
    draw = lambda seed: load_sources([SourceConfig(path=str(jsonl), sample=5)], seed=seed)[0]["output"]  # noqa: E731
    assert draw(3) == draw(3) and draw(3) != draw(4)
