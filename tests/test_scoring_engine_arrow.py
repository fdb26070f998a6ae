"""The scoring engine reads the pool through Arrow: lengths, the shard plan and cache keys without Python records,
each process materializing only its own shards' rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, concatenate_datasets, load_from_disk

from deita_train.data.config import SourceConfig
from deita_train.data.sources import load_sources
from deita_train.scoring import engine
from deita_train.scoring.base import Score, Scorer, ScoringContext
from deita_train.scoring.config import ScorerConfig
from deita_train.scoring.engine import content_lengths, length_order, plan_shards, scan_pool, score_pool

from .conftest import QUICKSTART_DATA
from .scoring_fixtures import mixed_records

CONVERSATIONS = [
    [{"role": "system", "content": "Réponds en français, s'il te plaît."},
     {"role": "user", "content": "Qu'est-ce qu'un naïf café ☕?"}, {"role": "assistant", "content": "Un café 🙂 naïf."}],
    [{"role": "user", "content": "数一数: 一二三"}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "e\u0301 is two code points; 🇫🇷 too"}, {"role": "assistant", "content": "ok"},
     {"role": "user", "content": "and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢?"}, {"role": "assistant", "content": "Ünïcödé, 4 bytes each: 𝔘"}],
]


def python_estimate(record: dict) -> int:
    """The engine's former length estimate, on a Python record."""
    return sum(len(message["content"]) for message in record["messages"])


def python_plan(records: list[dict], size: int) -> list[list[int]]:
    """The engine's former shard plan: positions longest first (ties by position), cut every `size`."""
    order = sorted(range(len(records)), key=lambda i: (-python_estimate(records[i]), i))
    return [order[start : start + size] for start in range(0, len(order), size)]


@pytest.fixture(scope="module")
def real_pool(tmp_path_factory) -> Dataset:
    """40 real Alpaca rows and conversations with system messages, unicode and an empty answer, loaded as the
    pipeline loads them, saved and memory-mapped back."""
    folder = tmp_path_factory.mktemp("real-pool")
    alpaca = QUICKSTART_DATA / "alpaca_cleaned_400.jsonl"
    chats = folder / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in CONVERSATIONS * 3))
    pool, _ = load_sources([SourceConfig(path=str(alpaca), format="alpaca", limit=40),
                            SourceConfig(path=str(chats), format="messages")], seed=0)
    pool.save_to_disk(str(folder / "pool"))
    return load_from_disk(str(folder / "pool"))


class Recorder(Scorer):
    """Scores the answer's length and records the ids of each batch it was given."""

    name = "recorder"
    per_turn = True
    batches: list[list[int]] = []

    def score_batch(self, batch):
        type(self).batches.append([row["id"] for row in batch])
        return [Score(value=[float(len(row["messages"][-1]["content"]))]) for row in batch]


@pytest.fixture
def recorder(monkeypatch) -> type[Recorder]:
    monkeypatch.setitem(engine.SCORERS._entries, "recorder", Recorder)
    monkeypatch.setattr(Recorder, "batches", [])
    return Recorder


def recorder_config(size: int = 4) -> dict[str, ScorerConfig]:
    return {"answer": ScorerConfig(type="recorder", shard_size=size)}


def plan(pool: Dataset, size: int = 4) -> list[engine.Shard]:
    lengths = scan_pool(pool)[1]
    return plan_shards(pool, lengths, length_order(lengths), Recorder(ScorerConfig("recorder", size), ScoringContext()))


def test_arrow_lengths_equal_the_python_estimate_on_real_rows(real_pool, monkeypatch):
    monkeypatch.setattr(engine, "SCAN_ROWS", 7)  # batches that end inside the pool
    records = real_pool.to_list()
    assert any(m["role"] == "system" for r in records for m in r["messages"]) and any(
        m["content"] == "" for r in records for m in r["messages"])
    ids, lengths = scan_pool(real_pool)
    assert lengths.tolist() == [python_estimate(r) for r in records] and ids.tolist() == list(range(len(records)))
    shuffled = real_pool.select(np.random.default_rng(0).permutation(len(real_pool)))  # an indices mapping
    ids, lengths = scan_pool(shuffled)
    assert lengths.tolist() == [python_estimate(r) for r in shuffled.to_list()]
    assert ids.tolist() == [r["id"] for r in shuffled.to_list()]


def test_arrow_lengths_of_sliced_empty_and_null_lists():
    struct = pa.struct([("role", pa.string()), ("content", pa.string())])
    messages = pa.array([[{"role": "user", "content": "abc"}], [], None, [{"role": "user", "content": None}],
                         [{"role": "user", "content": "é"}, {"role": "assistant", "content": "🙂🙂"}]],
                        type=pa.list_(struct))
    assert content_lengths(messages).tolist() == [3, 0, 0, 0, 3]
    assert content_lengths(messages.slice(1)).tolist() == [0, 0, 0, 3]
    assert content_lengths(messages.slice(0, 0)).tolist() == []


def test_shard_plan_equals_the_python_plan(real_pool):
    records = real_pool.to_list()
    for size in (1, 4, 7, len(records), len(records) + 5):
        assert [shard.positions.tolist() for shard in plan(real_pool, size)] == python_plan(records, size)


def test_each_process_scores_only_its_shards_each_row_once(real_pool, recorder, tmp_path, monkeypatch):
    class TwoProcesses:
        num_processes, process_index, is_main_process = 2, 0, True

        def wait_for_everyone(self) -> None:
            pass

    state = TwoProcesses()
    monkeypatch.setattr(engine, "process_state", lambda: state)
    monkeypatch.setattr(engine, "on_main_process", lambda task, what: task())
    shards = [shard.positions.tolist() for shard in plan(real_pool)]
    with pytest.raises(FileNotFoundError, match="is not finished"):  # process 1 has not scored its shards yet
        score_pool(real_pool, recorder_config(), ScoringContext(), tmp_path / "scored")
    assert recorder.batches == shards[0::2]
    recorder.batches.clear()
    state.process_index, state.is_main_process = 1, False
    scored, stats = score_pool(real_pool, recorder_config(), ScoringContext(), tmp_path / "scored")
    assert recorder.batches == shards[1::2]
    assert stats["answer"]["shards"] == {"total": len(shards), "reused": len(shards[0::2])}
    assert scored["answer"] == [[float(len(r["messages"][-1]["content"]))] for r in real_pool.to_list()]


def test_score_pool_never_materializes_the_pool(real_pool, recorder, tmp_path, monkeypatch):
    sizes: list[int] = []
    columns: list[str] = []
    to_list, getitem = Dataset.to_list, Dataset.__getitem__

    def recorded_to_list(self):
        sizes.append(len(self))
        return to_list(self)

    def recorded_getitem(self, key):
        if isinstance(key, str):
            columns.append(key)
        return getitem(self, key)

    monkeypatch.setattr(Dataset, "to_list", recorded_to_list)
    monkeypatch.setattr(Dataset, "__getitem__", recorded_getitem)
    score_pool(real_pool, recorder_config(size=5), ScoringContext(), tmp_path / "scored")
    given = [len(batch) for batch in recorder.batches]  # Python records exist for one shard at a time
    assert max(given) <= 5 and sum(given) == len(real_pool) and sizes == [] and columns == []


def test_cache_keys_follow_the_rows_content(real_pool):
    keys = [shard.key for shard in plan(real_pool)]
    assert [shard.key for shard in plan(real_pool)] == keys
    in_memory = Dataset.from_list(real_pool.to_list(), features=real_pool.features)
    rechunked = concatenate_datasets([real_pool.select(range(10)), real_pool.select(range(10, len(real_pool)))])
    assert [shard.key for shard in plan(in_memory)] == keys == [shard.key for shard in plan(rechunked)]

    records = real_pool.to_list()
    answer = records[3]["messages"][1]["content"]
    records[3]["messages"][1]["content"] = "".join("b" if c == "a" else "a" for c in answer)  # same length: same shards
    changed = [shard.key for shard in plan(Dataset.from_list(records, features=real_pool.features))]
    shard_of_row_3 = next(i for i, shard in enumerate(plan(real_pool)) if 3 in shard.positions)
    assert [i for i, (old, new) in enumerate(zip(keys, changed, strict=True)) if old != new] == [shard_of_row_3]


def test_a_pool_with_an_indices_mapping_gets_its_scores_on_its_rows(recorder, tmp_path):
    pool = Dataset.from_list(mixed_records()).select([10, 3, 7, 0, 9, 1, 2, 4, 5, 6, 8])
    scored, _ = score_pool(pool, recorder_config(size=3), ScoringContext(), tmp_path / "scored")
    assert scored["id"] == [r["id"] for r in pool.to_list()]
    assert scored["answer"] == [[float(len(r["messages"][-1]["content"]))] for r in pool.to_list()]
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(11))


def test_the_scored_pool_keeps_its_memory_mapped_source_folder_clean(real_pool, recorder, tmp_path):
    before = sorted(p.name for p in Path(real_pool.cache_files[0]["filename"]).parent.iterdir())
    score_pool(real_pool, recorder_config(), ScoringContext(), tmp_path / "scored")
    assert sorted(p.name for p in Path(real_pool.cache_files[0]["filename"]).parent.iterdir()) == before


def test_length_scorer_counts_the_same_on_arrow_as_on_records(real_pool, tiny_model, tmp_path):
    """`score_table` (Arrow, all messages in one call) equals `score_batch` (Python turns), on real and chunked rows,
    a conversation whose last user message is unanswered, and a tokenizer.json that ships truncation and padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    tokenizer.backend_tokenizer.enable_truncation(3)
    tokenizer.backend_tokenizer.enable_padding(length=64)
    tokenizer.save_pretrained(str(tmp_path / "truncating"))
    length = engine.SCORERS.get("length", "test")
    scorer = length(length.config_class(type="length", model=str(tmp_path / "truncating")), ScoringContext())
    scorer.load()
    dangling = {"id": 99, "messages": [*CONVERSATIONS[0], {"role": "user", "content": "and then?"}]}
    table = pa.Table.from_pylist([*real_pool.to_list(), dangling], schema=real_pool.data.table.schema)
    chunked = pa.concat_tables([table.slice(3, 20), table.slice(30)])
    for rows in (table, chunked, table.slice(0, 0)):
        assert scorer.score_table(rows) == scorer.score_batch(rows.to_pylist())
    counts = scorer.score_table(table)
    plain = AutoTokenizer.from_pretrained(str(tiny_model))
    user, answer = (message["content"] for message in real_pool[0]["messages"])
    assert counts[0].value == [float(sum(len(plain(text, add_special_tokens=False)["input_ids"])
                                         for text in (user, answer)))]
    assert counts[-1].value == counts[len(real_pool) - 3].value  # the unanswered last turn is no turn


def test_shards_are_read_in_groups_and_score_the_same(real_pool, recorder, tmp_path, monkeypatch):
    """However many shards one pass over the pool gathers, each shard gets its own rows: same keys, same scores."""
    assert [list(range(len(c))[g]) for c in ([5, 5, 5], []) for g in engine.gather_groups(c)] == [[0, 1, 2]]
    monkeypatch.setattr(engine, "GATHER_CHARS", 12)
    assert list(engine.gather_groups([5, 5, 30, 1, 1, 12])) == [slice(0, 2), slice(2, 3), slice(3, 5), slice(5, 6)]
    monkeypatch.setattr(engine, "GATHER_CHARS", 1)
    alone, _ = score_pool(real_pool, recorder_config(size=3), ScoringContext(), tmp_path / "alone" / "scored")
    alone_batches = recorder.batches[:]
    monkeypatch.setattr(engine, "GATHER_CHARS", 10**9)
    together, _ = score_pool(real_pool, recorder_config(size=3), ScoringContext(), tmp_path / "together" / "scored")
    assert recorder.batches[len(alone_batches):] == alone_batches == [
        [real_pool[int(p)]["id"] for p in shard.positions] for shard in plan(real_pool, 3)]
    assert together.data.table.equals(alone.data.table)
