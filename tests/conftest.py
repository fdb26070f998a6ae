"""Shared fixtures: a tiny Llama built locally (no download), the repository's paths, ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_DATA = REPO / "recipes" / "quickstart" / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory) -> Path:
    """The `datasets` cache, and the pool cache inside it, in a temporary folder (for subprocesses too)."""
    import datasets.config

    folder = tmp_path_factory.mktemp("datasets-cache")
    os.environ["HF_DATASETS_CACHE"] = str(folder)
    datasets.config.HF_DATASETS_CACHE = folder
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-64 random Llama with a 2,048-token byte-level BPE tokenizer (BOS, ChatML template)."""
    from deita_train.training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real tokenizers and data); tests needing it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory, tiny_model):
    """A random one-head Llama reward model with the tiny tokenizer (ChatML template, distinct pad id)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    path = tmp_path_factory.mktemp("tiny-reward")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sentence_model(tmp_path_factory, tiny_model):
    """A sentence-transformers model (tiny Llama encoder, mean pooling, normalization) saved locally."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    encoder = Transformer(str(tiny_model), max_seq_length=64)
    model = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), "mean"), Normalize()])
    path = tmp_path_factory.mktemp("tiny-st")
    model.save(str(path))
    return path


# A chat template the synth tests define themselves (not the tiny tokenizer's ChatML): its pre-query template is
# `<s><|im_start|>user: `, its turns end with <|im_end|>.
SYNTH_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
)


@pytest.fixture(scope="session")
def stopping_model(tmp_path_factory, tiny_model):
    """The tiny model with the test's own chat template, whose <|im_end|> logit is made large along one direction:
    its samples end after a few to a few dozen tokens (a random model would rarely stop), so synth keeps some."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = SYNTH_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("<|im_end|>")] = 5.0 * direction / direction.norm()
    path = tmp_path_factory.mktemp("stopping-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
