"""Pre-query templates derived from chat templates, the published table, multi-turn prefixes and end-of-turn stops."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from deita_train.synth.templates import (
    PRE_QUERY_TEMPLATES,
    derive_pre_query_template,
    end_of_turn_stops,
    multi_turn_user_prefix,
    resolve_pre_query_template,
    table_name_for,
)

# Upstream chat templates (google/gemma-2-9b-it, microsoft/Phi-3-mini-128k-instruct, mistralai/Mistral-7B-Instruct-v0.1).
GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


@pytest.fixture
def tiny_tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def real_tokenizer(shared_data, name):
    folder = shared_data / "tokenizers" / name
    if not (folder / "tokenizer_config.json").is_file():
        pytest.skip(f"{folder} is not present")
    return AutoTokenizer.from_pretrained(folder)


def test_llama3_derives_the_published_template(shared_data):
    tokenizer = real_tokenizer(shared_data, "llama3")
    assert derive_pre_query_template(tokenizer) == PRE_QUERY_TEMPLATES["llama3"]
    assert derive_pre_query_template(tokenizer, "Be brief.") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )
    assert multi_turn_user_prefix(tokenizer) == "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"


def test_qwen2_keeps_its_default_system_prompt(shared_data):
    tokenizer = real_tokenizer(shared_data, "qwen2")
    assert derive_pre_query_template(tokenizer) == PRE_QUERY_TEMPLATES["qwen2_system"]
    assert PRE_QUERY_TEMPLATES["qwen2_system"].endswith(PRE_QUERY_TEMPLATES["qwen2"])
    assert derive_pre_query_template(tokenizer, "Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )
    assert multi_turn_user_prefix(tokenizer) == "<|im_end|>\n<|im_start|>user\n"


def test_tiny_chatml(tiny_tokenizer):
    assert derive_pre_query_template(tiny_tokenizer) == "<|im_start|>user\n"
    assert derive_pre_query_template(tiny_tokenizer, "Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )
    assert multi_turn_user_prefix(tiny_tokenizer) == "<|im_end|>\n<|im_start|>user\n"


def test_multi_turn_prefix_continues_the_rendered_conversation(tiny_tokenizer):
    """prompt that produced the answer + answer + prefix = the next user turn's pre-query template."""
    first = [{"role": "user", "content": "Hi"}]
    prompt = tiny_tokenizer.apply_chat_template(first, tokenize=False, add_generation_prompt=True)
    conversation = [*first, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Q"}]
    rendered = tiny_tokenizer.apply_chat_template(conversation, tokenize=False)
    assert rendered.startswith(prompt + "Hello!" + multi_turn_user_prefix(tiny_tokenizer) + "Q")


def test_gemma2_template_differs_from_the_table_by_one_newline(tiny_tokenizer):
    tiny_tokenizer.add_tokens(["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    tiny_tokenizer.bos_token = "<bos>"
    tiny_tokenizer.chat_template = GEMMA2
    derived = derive_pre_query_template(tiny_tokenizer)
    assert derived == "<bos><start_of_turn>user\n"
    assert PRE_QUERY_TEMPLATES["gemma2"] == derived + "\n"
    assert multi_turn_user_prefix(tiny_tokenizer) == "<end_of_turn>\n<start_of_turn>user\n"


@pytest.mark.parametrize(("template", "name", "derived", "next_turn"), [
    (PHI3, "phi3", "<s><|user|>\n", "<|end|>\n<|user|>\n"),
    (MISTRAL, "mistral", "<s>[INST] ", "</s> [INST] "),
])
def test_sentencepiece_templates_differ_from_the_table_by_a_space_after_bos(tiny_tokenizer, template, name, derived,
                                                                            next_turn):
    tiny_tokenizer.chat_template = template
    assert derive_pre_query_template(tiny_tokenizer) == derived
    assert PRE_QUERY_TEMPLATES[name] == derived.replace("<s>", "<s> ")
    assert multi_turn_user_prefix(tiny_tokenizer) == next_turn


def test_template_refusing_a_system_turn_names_the_fix(tiny_tokenizer):
    tiny_tokenizer.chat_template = MISTRAL
    with pytest.raises(ValueError, match=r"refused a pre-query template: .*synth\.pre_query_template"):
        derive_pre_query_template(tiny_tokenizer, "Be brief.")


def test_no_chat_template_names_the_fix(tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"no chat template.*synth\.pre_query_template"):
        derive_pre_query_template(tiny_tokenizer)


def test_template_dropping_the_content_names_the_fix(tiny_tokenizer):
    tiny_tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match=r"does not render the message content.*synth\.pre_query_template"):
        derive_pre_query_template(tiny_tokenizer)
    with pytest.raises(ValueError, match=r"does not render the message content.*synth\.turns: 1"):
        multi_turn_user_prefix(tiny_tokenizer)


def test_resolve_each_option_kind(tiny_tokenizer):
    assert resolve_pre_query_template("auto", tiny_tokenizer, "tiny", None) == ("<|im_start|>user\n", "derived")
    assert resolve_pre_query_template("auto", tiny_tokenizer, "tiny", "S") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n", "derived")
    assert resolve_pre_query_template("qwen2.5", tiny_tokenizer, "tiny", None) == (
        PRE_QUERY_TEMPLATES["qwen2.5"], "table:qwen2.5")
    assert resolve_pre_query_template("### Instruction:\n", tiny_tokenizer, "tiny", None) == (
        "### Instruction:\n", "explicit")


def test_resolve_refuses_a_system_prompt_it_cannot_render(tiny_tokenizer):
    for option in ("llama3", "### Instruction:\n"):
        with pytest.raises(ValueError, match=r"synth\.system_prompt"):
            resolve_pre_query_template(option, tiny_tokenizer, "tiny", "S")


def test_auto_without_chat_template_falls_back_to_the_table_by_model_name(tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    assert resolve_pre_query_template("auto", tiny_tokenizer, "meta-llama/Meta-Llama-3-8B-Instruct", None) == (
        PRE_QUERY_TEMPLATES["llama3"], "table:llama3")
    assert resolve_pre_query_template("auto", tiny_tokenizer, "/models/Qwen2.5-7B-Instruct/", None) == (
        PRE_QUERY_TEMPLATES["qwen2.5"], "table:qwen2.5")
    with pytest.raises(ValueError, match=r"matches no table entry.*synth\.pre_query_template"):
        resolve_pre_query_template("auto", tiny_tokenizer, "openai-community/gpt2", None)


@pytest.mark.parametrize(("model", "entry"), [
    ("Meta-Llama-3-8B-Instruct", "llama3"),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama3"),
    ("meta-llama/Llama-2-7b-chat-hf", "llama2"),
    ("huggyllama/llama-30b", None),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5"),
    ("Qwen/Qwen2-7B-Instruct", "qwen2"),
    ("Qwen/Qwen1.5-7B-Chat", "qwen2"),
    ("google/gemma-2-9b-it", "gemma2"),
    ("microsoft/Phi-3-mini-128k-instruct", "phi3"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
    ("lmsys/vicuna-7b-v1.5", "vicuna"),
    ("gpt2", None),
])
def test_table_name_for(model, entry):
    assert table_name_for(model) == entry


def test_end_of_turn_stops_of_real_tokenizers(shared_data):
    llama3 = real_tokenizer(shared_data, "llama3")
    assert end_of_turn_stops(llama3) == (
        ["<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"], [128001, 128009, 128006, 128007])
    # Qwen2's vocabulary has a plain-text `</s>` token: not a stop.
    assert end_of_turn_stops(real_tokenizer(shared_data, "qwen2")) == (
        ["<|im_end|>", "<|im_start|>", "<|endoftext|>"], [151645, 151644, 151643])


def test_end_of_turn_stops_read_generation_config_eos(tiny_tokenizer, tmp_path):
    assert end_of_turn_stops(tiny_tokenizer) == (["</s>", "<|im_start|>", "<|im_end|>"], [2, 4, 5])
    tiny_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 9]}))
    strings, ids = end_of_turn_stops(AutoTokenizer.from_pretrained(tmp_path))
    assert ids == [2, 5, 9, 4]
    assert strings == ["</s>", "<|im_end|>", tiny_tokenizer.convert_ids_to_tokens(9), "<|im_start|>"]
