"""`reward`: a reward model's score of the whole conversation, rendered with its own chat template.

An `AutoModelForSequenceClassification` reads the conversation (the reward tokenizer's chat
template, tokens as the template writes them) and returns one logit per sample; the model pools at
the last real token, found through its pad id, so the batch is right-padded with that id.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from deita_train.data.conversation import has_empty_answer
from deita_train.scoring import lm
from deita_train.scoring.base import Record, Score, Scorer, register_scorer
from deita_train.scoring.batching import right_pad, token_batches
from deita_train.scoring.config import RewardScorerConfig


@register_scorer("reward")
class RewardScorer(Scorer):
    """One float per sample: the reward model's logit `label` at the conversation's last token."""

    config_class = RewardScorerConfig

    def models(self) -> list[str]:
        return [lm.model_name(self.config, self.context)]

    def load(self) -> None:
        self.tokenizer = lm.load_tokenizer(self.config, self.context)
        if not self.tokenizer.chat_template:
            raise ValueError(f"score.<column>.model: the reward tokenizer {self.models()[0]} has no chat template; "
                             "reward models read conversations in their own template")
        self.model = lm.load_model(self.config, self.context, AutoModelForSequenceClassification)
        self.pad = self.model.config.get_text_config().pad_token_id
        if self.pad is None:
            raise ValueError(f"{self.models()[0]}: the reward model's config has no pad_token_id, so it cannot "
                             "find the last token of a padded batch; set pad_token_id in its config.json")
        if not 0 <= self.config.label < self.model.config.num_labels:
            raise ValueError(f"score.<column>.label: {self.config.label} is not one of the model's "
                             f"{self.model.config.num_labels} outputs")

    def close(self) -> None:
        del self.model, self.tokenizer

    def token_ids(self, record: Record) -> tuple[list[int], bool]:
        text = self.tokenizer.apply_chat_template(record["messages"], tokenize=False)
        ids = lm.encode(self.tokenizer, text)
        truncated = len(ids) > self.config.max_length
        ids = ids[: self.config.max_length]
        if ids[-1] == self.pad:
            raise ValueError(f"record id={record['id']}: the rendered conversation ends with the pad token "
                             f"{self.pad}, which the model would read as padding; give the reward model a "
                             "distinct pad_token_id")
        return ids, truncated

    @torch.inference_mode()
    def score_batch(self, batch: list[Record]) -> list[Score]:
        scorable = [i for i, record in enumerate(batch) if not has_empty_answer(record["messages"])]
        encoded = [self.token_ids(batch[i]) for i in scorable]
        sequences = [ids for ids, _ in encoded]
        scores = [Score.unscorable("empty answer")] * len(batch)
        for group in token_batches([len(s) for s in sequences], self.config.batch_tokens, self.config.max_batch_size):
            input_ids, attention_mask = right_pad([sequences[j] for j in group], self.pad, self.model.device)
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            for row, j in enumerate(group):
                reward = float(logits[row, self.config.label].float())
                scores[scorable[j]] = Score(value=reward, truncated=encoded[j][1])
        return scores
