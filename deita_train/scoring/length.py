"""`length`: tokens per turn (user + assistant, with the model's tokenizer); the list's length is the turn count."""

from __future__ import annotations

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

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text, no special tokens added: with a fast tokenizer, its Rust encoder's `encode_batch_fast`
        (no offsets, no conversion to Python lists of ids: the same ids, several times faster)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return [len(encoding.ids) for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]

    def score_batch(self, batch: list[Record]) -> list[Score]:
        texts = [text for record in batch for turn in turns(record["messages"]) for text in (turn.user, turn.assistant)]
        counts = iter(self.token_counts(texts))
        return [
            Score(value=[float(next(counts) + next(counts)) for _ in turns(record["messages"])])
            for record in batch
        ]
