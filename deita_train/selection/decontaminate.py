"""`select.decontaminate`: find the pool rows whose user turns overlap an evaluation set's prompts.

N-gram rule (after AllenAI open-instruct's `decontamination/search.py`, which scores a test prompt by the share of
its tokens inside n-grams it shares with one training document): texts are lowercased and split into words (runs
of letters and digits, Unicode-aware). A row shares an n-gram with an eval prompt when one of its user turns holds
`ngram` consecutive words that the prompt holds too; a prompt shorter than `ngram` words has no n-gram and matches
a user turn made of exactly its words. The row's overlap with the prompt is the share of the prompt's words inside
shared n-grams (1 for an exact short prompt). A row is contaminated when its largest overlap is at least
`min_overlap` (default: any shared n-gram); it is reported under that prompt's set, with the first n-gram shared.

Scale: the eval prompts' n-grams (~1K prompts) are hashed into a sorted array. The pool's `messages` column is read
in batches of Arrow rows; each batch's user turns are tokenized by Arrow kernels, every window of words is hashed
with numpy, and only hash hits are compared word by word (so a collision never matches) and reach Python.

Embedding rule (`embedding`): each user turn and each eval prompt is encoded by one sentence-transformers model as a
unit vector; a turn matches its nearest prompt (FAISS inner product) when their cosine is at least `threshold`. A
row both rules match is reported under its n-gram match.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from deita_train.data.arrow_rows import arrow_table, take_rows
from deita_train.recipe.errors import RecipeError
from deita_train.selection.config import DecontaminateConfig, EmbeddingMatchConfig
from deita_train.selection.eval_prompts import eval_prompts

logger = logging.getLogger(__name__)

KEY = "select.decontaminate"
SEPARATORS = r"[^\pL\pN]+"  # RE2: anything but Unicode letters and digits
MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash of a gram's word ids, modulo 2^64
EXAMPLES = 20  # matches shown in selection.json


@dataclass
class Contamination:
    """The contaminated rows of a pool and what matched each: parallel sequences in row order.

    `rows` are pool positions (ascending, int64); per row, `sets` names the eval set, `matches` the matched text (the
    first shared n-gram's words, a short prompt's words, or for the embedding rule the eval prompt), `scores` the
    overlap (n-gram rule) or cosine similarity (embedding rule) and `rules` which rule matched (`ngram`,
    `embedding`). `prompts` and `short` count each checked set's prompts, and those shorter than `ngram` words.
    """

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sets: list[str] = field(default_factory=list)
    matches: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rules: list[str] = field(default_factory=list)
    prompts: dict[str, int] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)

    def by_set(self) -> dict[str, int]:
        """Contaminated rows per checked set, in `sets` order (zeros too; empty when nothing was checked)."""
        return {name: self.sets.count(name) for name in self.prompts}

    def summary(self, scored: Dataset, config: DecontaminateConfig) -> dict[str, Any]:
        """`selection.json`'s `decontamination`: the options, per set its prompts and rows, and the first matches."""
        shown = self.rows[:EXAMPLES]
        ids = take_rows(arrow_table(scored, {"id"}), shown).column("id").to_pylist() if len(shown) else []
        examples = [{"id": ids[i], "set": self.sets[i], **(
            {"ngram": self.matches[i], "overlap": round(float(self.scores[i]), 4)} if self.rules[i] == "ngram" else
            {"prompt": self.matches[i], "similarity": round(float(self.scores[i]), 4)})} for i in range(len(shown))]
        counts = self.by_set()
        return {
            "ngram": config.ngram,
            "min_overlap": config.min_overlap,
            "embedding": None if config.embedding is None else {"model": config.embedding.model,
                                                                "threshold": config.embedding.threshold},
            "rows": len(self.rows),
            "sets": {name: {"prompts": count, "shorter_than_ngram": self.short[name], "rows": counts[name]}
                     for name, count in self.prompts.items()},
            "examples": examples,
        }


@dataclass
class EvalIndex:
    """The eval prompts and their distinct n-grams (a short prompt: its words padded with `pad`), sorted by hash."""

    n: int
    set_names: list[str]
    prompt_set: np.ndarray  # set position of each prompt
    prompts: list[str]
    words: list[list[str]]  # each prompt's words
    vocab: pa.Array  # every eval word: a pool word outside it ends every n-gram
    pad: int  # the word id filling a short prompt's gram
    hashes: np.ndarray  # uint64, ascending, one per gram
    grams: np.ndarray  # int64 [grams, n]: word ids, in hash order
    places: list[list[tuple[int, int]]]  # per gram: (prompt, first word) of each occurrence


def find_contamination(scored: Dataset, config: DecontaminateConfig | None) -> Contamination:
    """The rows of `scored` (canonical `messages`) that `config` finds contaminated; an empty `Contamination` (no
    set checked) when `config` is None."""
    if config is None:
        return Contamination()
    if "messages" not in scored.column_names:
        raise RecipeError([f"{KEY}: reads the user turns in `messages`, which the dataset does not have"])
    sets = {entry: eval_prompts(entry, f"{KEY}.sets.{i}") for i, entry in enumerate(config.sets)}
    index = build_index(sets, config.ngram)
    short = {name: sum(len(index.words[p]) < config.ngram for p in np.flatnonzero(index.prompt_set == s))
             for s, name in enumerate(index.set_names)}
    logger.info("%s: %s", KEY, ", ".join(f"{name} {len(prompts)} prompts ({short[name]} shorter than {config.ngram} "
                                         "words: matched as a whole user turn)" for name, prompts in sets.items()))
    messages = arrow_table(scored, {"messages"})
    rows, matched, scores, texts = ngram_matches(messages, index, config)
    rules = ["ngram"] * len(rows)
    if config.embedding is not None:
        found, near, similarity = embedding_matches(messages, index, config.embedding, config.batch_rows)
        new = ~np.isin(found, rows)
        rows = np.concatenate([rows, found[new]])
        matched = np.concatenate([matched, near[new]])
        scores = np.concatenate([scores, similarity[new]])
        texts += [index.prompts[p] for p in near[new]]
        rules += ["embedding"] * int(new.sum())
    order = np.argsort(rows, kind="stable")
    return Contamination(
        rows=rows[order], sets=[index.set_names[index.prompt_set[matched[i]]] for i in order],
        matches=[texts[i] for i in order], scores=scores[order], rules=[rules[i] for i in order],
        prompts={name: len(prompts) for name, prompts in sets.items()}, short=short)


def word_tokens(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Every word of `texts` (lowercased, in order) and the position of the text it is in."""
    split = pc.split_pattern_regex(pc.utf8_lower(texts), SEPARATORS)
    words = pc.list_flatten(split)
    owner = pc.list_parent_indices(split).to_numpy()
    nonempty = pc.greater(pc.utf8_length(words), 0)  # the split leaves "" before leading and after trailing separators
    return words.filter(nonempty), owner[nonempty.to_numpy(zero_copy_only=False)]


def gram_hashes(columns: list[np.ndarray]) -> np.ndarray:
    """The polynomial hash (mod 2^64) of each gram whose j-th word ids are `columns[j]`."""
    hashes = np.zeros(len(columns[0]), dtype=np.uint64)
    for column in columns:
        hashes = hashes * MULTIPLIER + (column.astype(np.uint64) + np.uint64(1))
    return hashes


def build_index(sets: dict[str, list[str]], n: int) -> EvalIndex:
    """The distinct n-grams of every prompt in `sets` (set name -> prompts), with where each occurs."""
    prompts = [prompt for texts in sets.values() for prompt in texts]
    words_array, owner = word_tokens(pa.array(prompts, pa.string()))
    flat = words_array.to_pylist()
    bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(prompts)))])
    words = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    vocabulary = sorted(set(flat))
    ids = {word: i for i, word in enumerate(vocabulary)}
    pad = len(vocabulary)
    grams: dict[tuple[int, ...], int] = {}
    places: list[list[tuple[int, int]]] = []
    for prompt, prompt_words in enumerate(words):
        word_ids = [ids[word] for word in prompt_words]
        windows = ([word_ids + [pad] * (n - len(word_ids))] if 0 < len(word_ids) < n
                   else [word_ids[s:s + n] for s in range(len(word_ids) - n + 1)])
        for start, gram in enumerate(windows):
            number = grams.setdefault(tuple(gram), len(grams))
            if number == len(places):
                places.append([])
            places[number].append((prompt, start))
    matrix = np.array(list(grams), dtype=np.int64).reshape(len(grams), n)
    hashes = gram_hashes(list(matrix.T))
    order = np.argsort(hashes, kind="stable")
    sizes = [len(texts) for texts in sets.values()]
    return EvalIndex(n=n, set_names=list(sets), prompt_set=np.repeat(np.arange(len(sets)), sizes), prompts=prompts,
                     words=words, vocab=pa.array(vocabulary, pa.string()), pad=pad, hashes=hashes[order],
                     grams=matrix[order], places=[places[i] for i in order])


def user_turns(messages: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The content of every user message in `messages` (Arrow `list<struct<role, content>>`) and its row."""
    flat = pc.list_flatten(messages)
    owner = pc.list_parent_indices(messages).to_numpy()
    content = pc.struct_field(flat, "content")
    user = pc.and_(pc.equal(pc.struct_field(flat, "role"), "user"), pc.is_valid(content)).fill_null(False)
    return content.filter(user), owner[user.to_numpy(zero_copy_only=False)]


def batches(messages: pa.Table, rows: int) -> Iterator[tuple[int, pa.Array]]:
    """`(first row, messages)` for consecutive batches of at most `rows` rows (zero-copy slices)."""
    start = 0
    for batch in messages.to_batches(max_chunksize=rows):
        yield start, batch.column(0)
        start += batch.num_rows


def turn_hits(index: EvalIndex, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """`(text, gram)` for each eval gram in `texts`: an n-gram inside one text, or a short prompt's whole words."""
    words, owner = word_tokens(texts)
    ids = pc.index_in(words, value_set=index.vocab).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    n, span = index.n, len(ids) - index.n + 1
    lengths = np.bincount(owner, minlength=len(texts))
    firsts = np.cumsum(lengths) - lengths
    found_texts, found_grams = [], []
    if span > 0:  # windows of n words inside one text, none outside the vocabulary
        outside = np.concatenate([[0], np.cumsum(ids < 0)])
        valid = np.flatnonzero((owner[:span] == owner[n - 1:]) & (outside[n:] == outside[:span]))
        hashes = gram_hashes([ids[j:j + span] for j in range(n)])[valid]
        hit, gram = lookup(index, hashes, lambda at: ids[valid[at, None] + np.arange(n)])
        found_texts.append(owner[valid[hit]])
        found_grams.append(gram)
    short = np.flatnonzero((lengths > 0) & (lengths < n))
    if len(short):  # whole short texts, padded as short prompts are
        padded = np.full((len(short), n), index.pad, dtype=np.int64)
        inside = np.arange(n) < lengths[short, None]
        padded[inside] = ids[(firsts[short, None] + np.arange(n))[inside]]
        known = (padded >= 0).all(1)
        hit, gram = lookup(index, gram_hashes(list(padded[known].T)), lambda at: padded[known][at])
        found_texts.append(short[known][hit])
        found_grams.append(gram)
    if not found_texts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(found_texts), np.concatenate(found_grams)


def lookup(index: EvalIndex, hashes: np.ndarray, grams_at) -> tuple[np.ndarray, np.ndarray]:
    """Of candidate grams with `hashes`, those that are eval grams: `(candidate positions, gram numbers)`.
    `grams_at(positions)` gives candidates' word ids, compared in full against the eval gram of the same hash (two
    eval grams sharing a 64-bit hash, odds ~1e-10 for 1e5 grams, would hide the second)."""
    if not len(index.hashes) or not len(hashes):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    found = np.minimum(np.searchsorted(index.hashes, hashes), len(index.hashes) - 1)
    hit = np.flatnonzero(index.hashes[found] == hashes)
    same = (grams_at(hit) == index.grams[found[hit]]).all(1)
    return hit[same], found[hit[same]]


def ngram_matches(messages: pa.Table, index: EvalIndex,
                  config: DecontaminateConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Contaminated rows (ascending) by the n-gram rule; for each, its best prompt, the overlap with it and the first
    n-gram shared with it."""
    width = max(len(index.hashes), 1)
    pairs = [np.zeros(0, dtype=np.int64)]  # row * width + gram, one per distinct (row, gram)
    for start, column in batches(messages, config.batch_rows):
        texts, owner = user_turns(column)
        turn, gram = turn_hits(index, texts)
        pairs.append(np.unique((owner[turn].astype(np.int64) + start) * width + gram))
    rows, grams = np.divmod(np.concatenate(pairs), width)
    firsts = np.flatnonzero(np.diff(rows, prepend=-1))
    found: tuple[list[int], list[int], list[float], list[str]] = ([], [], [], [])
    for row, row_grams in zip(rows[firsts], np.split(grams, firsts[1:]) if len(rows) else [], strict=True):
        prompt, overlap, text = best_prompt(index, row_grams)
        if config.min_overlap is None or overlap >= config.min_overlap:
            for values, value in zip(found, (int(row), prompt, overlap, text), strict=True):
                values.append(value)
    return (np.array(found[0], dtype=np.int64), np.array(found[1], dtype=np.int64), np.array(found[2]),
            found[3])


def best_prompt(index: EvalIndex, grams: np.ndarray) -> tuple[int, float, str]:
    """Of the prompts holding `grams` (one row's), the one the row overlaps most (the first on ties), that overlap,
    and the first n-gram (in the prompt's order) the row shares with it."""
    covered: dict[int, set[int]] = {}
    first: dict[int, int] = {}
    for gram in grams:
        for prompt, start in index.places[gram]:
            width = min(index.n, len(index.words[prompt]))  # a short prompt: all its words
            covered.setdefault(prompt, set()).update(range(start, start + width))
            first[prompt] = min(first.get(prompt, start), start)
    prompt = max(covered, key=lambda p: (len(covered[p]) / len(index.words[p]), -p))
    words = index.words[prompt]
    return prompt, len(covered[prompt]) / len(words), " ".join(words[first[prompt]:first[prompt] + index.n])


def embedding_matches(messages: pa.Table, index: EvalIndex, config: EmbeddingMatchConfig,
                      batch_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (ascending) with a user turn whose cosine to its nearest eval prompt is at least `config.threshold`; for
    each, the nearest prompt of its most similar turn, and that similarity."""
    import faiss  # here: heavy, and only this rule needs them
    from sentence_transformers import SentenceTransformer

    from deita_train.processes import process_state

    encoder = SentenceTransformer(config.model, device=str(process_state().device),
                                  trust_remote_code=config.trust_remote_code)

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=config.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False).astype(np.float32)

    prompts = encode(index.prompts)
    search = faiss.IndexFlatIP(prompts.shape[1])
    search.add(prompts)
    rows, nearest, similarity = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    for start, column in batches(messages, batch_rows):
        texts, owner = user_turns(column)
        if not len(texts):
            continue
        scores, labels = search.search(encode(texts.to_pylist()), 1)
        hit = np.flatnonzero(scores[:, 0] >= config.threshold)
        hit = hit[np.lexsort((-scores[hit, 0], owner[hit]))]  # by row, most similar turn first
        hit = hit[np.diff(owner[hit], prepend=-1) != 0]
        rows.append(owner[hit].astype(np.int64) + start)
        nearest.append(labels[hit, 0].astype(np.int64))
        similarity.append(scores[hit, 0].astype(np.float64))
    return np.concatenate(rows), np.concatenate(nearest), np.concatenate(similarity)
