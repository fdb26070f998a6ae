"""`embedding`: one fixed-size vector per sample (docs/methods.md, Repr Filter), stored as float32 (or float16) Arrow.

- `backend: transformers`, `pooling: last_token` (Deita's default): a causal LM reads the whole
  conversation in Vicuna v1.1 (BOS, `SYSTEM USER: q ASSISTANT: a</s>...`), right-truncated to
  `max_length`; the vector is the final hidden state at the last real token, not normalized.
  `pooling: mean` averages the final hidden states over the real tokens instead.
- `backend: sentence_transformers`: a local sentence-transformers model over
  `instruction\\n[input\\n]output` (Alpaca records) or the turns joined by newlines; its own pooling
  (masked mean for MiniLM/mpnet), L2-normalized (Superfiltering-D, docs/methods.md, IFD).
"""

from __future__ import annotations

import numpy as np

from deita_train.data.chat_templates import VICUNA_V11
from deita_train.scoring import lm
from deita_train.scoring.base import Record, Score, Scorer, register_scorer
from deita_train.scoring.config import EmbeddingScorerConfig


def plain_text(record: Record) -> str:
    """`instruction\\n[input\\n]output` for Alpaca records; else every user and assistant message, one per line."""
    if isinstance(record.get("instruction"), str) and isinstance(record.get("output"), str):
        parts = [record["instruction"], record.get("input") or "", record["output"]]
        return "\n".join(part for part in parts if part)
    return "\n".join(message["content"] for message in record["messages"] if message["role"] != "system")


@register_scorer("embedding")
class EmbeddingScorer(Scorer):
    """A vector per sample from a causal LM (Vicuna rendering) or a sentence-transformers encoder."""

    config_class = EmbeddingScorerConfig
    fields = ("instruction", "input", "output")  # the sentence-transformers text of Alpaca records

    def models(self) -> list[str]:
        return [lm.model_name(self.config, self.context)]

    def load(self) -> None:
        if self.config.backend == "sentence_transformers":
            from sentence_transformers import SentenceTransformer

            from deita_train.processes import process_state

            with lm.outside_zero3_init():
                self.encoder = SentenceTransformer(self.models()[0], device=str(process_state().device),
                                                   trust_remote_code=self.config.trust_remote_code)
            return
        self.tokenizer = lm.load_tokenizer(self.config, self.context)
        if self.tokenizer.bos_token is None or self.tokenizer.eos_token is None:
            raise ValueError(f"score.<column>.model: {self.models()[0]} has no BOS or EOS token, which the Vicuna "
                             "rendering needs; use pooling over a LLaMA/Mistral-style tokenizer or backend "
                             "sentence_transformers")
        self.model = lm.load_model(self.config, self.context)

    def close(self) -> None:
        if self.config.backend == "sentence_transformers":
            del self.encoder
        else:
            del self.model, self.tokenizer

    def score_batch(self, batch: list[Record]) -> list[Score]:
        vectors, truncated = (self.encode_sentences if self.config.backend == "sentence_transformers"
                              else self.encode_conversations)(batch)
        vectors = vectors.astype(self.config.storage_dtype)
        return [Score(value=vector, truncated=cut) for vector, cut in zip(vectors, truncated, strict=True)]

    def encode_conversations(self, batch: list[Record]) -> tuple[np.ndarray, list[bool]]:
        sequences, truncated = [], []
        for record in batch:
            text = self.tokenizer.apply_chat_template(record["messages"], chat_template=VICUNA_V11, tokenize=False)
            ids = lm.encode(self.tokenizer, text)
            truncated.append(len(ids) > self.config.max_length)
            sequences.append(ids[: self.config.max_length])
        pooled = lm.pooled_hidden(self.model, sequences, self.config.pooling, lm.pad_id(self.tokenizer),
                                  self.config.batch_tokens, self.config.max_batch_size)
        return pooled.numpy(), truncated

    def encode_sentences(self, batch: list[Record]) -> tuple[np.ndarray, list[bool]]:
        texts = [plain_text(record) for record in batch]
        limit = self.encoder.max_seq_length
        lengths = [len(ids) for ids in self.encoder.tokenizer(texts)["input_ids"]]
        vectors = self.encoder.encode(texts, batch_size=self.config.max_batch_size or 32, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32), [length > limit for length in lengths]
