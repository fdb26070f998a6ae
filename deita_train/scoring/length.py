"""`length`: tokens per turn (user + assistant, with the model's tokenizer); the list's length is the turn count."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_train.data.conversation import turns
from deita_train.scoring.base import Record, Score, Scorer, register_scorer
from deita_train.scoring.config import LengthScorerConfig


@register_scorer("length")
class LengthScorer(Scorer):
    """Token counts per turn, no model forward pass: `[n_1, ..., n_T]`, n_t = tokens(user_t) + tokens(answer_t)."""

    config_class = LengthScorerConfig
    per_turn = True

    def models(self) -> list[str]:
        name = self.config.model or self.context.model_name_or_path
        if name is None:
            raise ValueError("score.<column>.model: the length scorer needs a tokenizer: "
                             "set `model` or the recipe's model")
        return [name]

    def load(self) -> None:
        from deita_train.training.models import load_tokenizer

        self.tokenizer = load_tokenizer(self.models()[0], trust_remote_code=self.config.trust_remote_code)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # as `tokenizer(texts)` does: a `tokenizer.json` may ship padding or truncation
            backend.no_padding()
            backend.no_truncation()

    def token_counts(self, texts: list[str]) -> np.ndarray:
        """Tokens of each text, no special tokens added: with a fast tokenizer, its Rust encoder's `encode_batch_fast`
        (no offsets, no Python lists of ids: the same counts, several times faster)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            counts = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        else:
            counts = [len(encoding) for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return np.asarray(counts, dtype=np.int64)

    def score_batch(self, batch: list[Record]) -> list[Score]:
        texts = [text for record in batch for turn in turns(record["messages"]) for text in (turn.user, turn.assistant)]
        counts = iter(self.token_counts(texts).tolist())
        return [
            Score(value=[float(next(counts) + next(counts)) for _ in turns(record["messages"])])
            for record in batch
        ]

    def score_table(self, rows: pa.Table) -> list[Score]:
        """`score_batch` on the Arrow `messages` column: every non-system message counted in one call, then each
        turn's user and answer counts summed with numpy (canonical messages: an optional system message first, then
        user and assistant alternating; a last unanswered user message is no turn)."""
        messages = rows.column("messages").combine_chunks()
        flat = pc.list_flatten(messages)
        body = pc.not_equal(pc.struct_field(flat, "role"), "system")
        counts = self.token_counts(pc.struct_field(flat, "content").filter(body).to_pylist())
        per_row = pc.list_value_length(messages).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        body_before = np.concatenate([[0], np.cumsum(body.to_numpy(zero_copy_only=False), dtype=np.int64)])
        row_ends = np.cumsum(per_row)
        body_starts, body_ends = body_before[row_ends - per_row], body_before[row_ends]  # each row's run of counts
        turns_per_row = (body_ends - body_starts) // 2
        turn_starts = np.concatenate([[0], np.cumsum(turns_per_row)])
        within = np.arange(turn_starts[-1]) - np.repeat(turn_starts[:-1], turns_per_row)
        user = np.repeat(body_starts, turns_per_row) + 2 * within
        values = (counts[user] + counts[user + 1]).astype(np.float64).tolist()
        return [Score(value=values[start:end]) for start, end in zip(turn_starts[:-1], turn_starts[1:], strict=True)]
