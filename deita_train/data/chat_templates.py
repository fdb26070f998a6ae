"""Named chat templates, with `{% generation %}` markers so TRL can train on assistant tokens only.

`vicuna_v1.1` is FastChat's `vicuna_v1.1` conversation (Deita-7B trains on it, docs/methods.md, the Deita-7B recipe):
`{bos}{system} USER: {q1} ASSISTANT: {a1}{eos}USER: {q2} ASSISTANT: {a2}{eos}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

VICUNA_V11 = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = \"" + VICUNA_SYSTEM + "\" %}"
    "{% set loop_messages = messages %}{% endif %}"
    "{{ bos_token + system + ' ' }}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

TEMPLATES = {"vicuna_v1.1": VICUNA_V11, "chatml": CHATML, "llama3": LLAMA3}
# Templates whose turns end with their own token: it becomes the EOS, so generation stops there.
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
TEMPLATE_NAMES = (*TEMPLATES, "model")


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """Set the named template on `tokenizer` (in place); `model` keeps the tokenizer's own.

    ChatML and Llama-3 end turns with their own token, which becomes the EOS so generation stops there.
    """
    if name == "model":
        if not tokenizer.chat_template:
            raise ValueError("model.chat_template: the tokenizer has no chat template of its own; "
                             f"choose one of {', '.join(TEMPLATES)}")
        return tokenizer
    if name in END_OF_TURN:
        if END_OF_TURN[name] not in tokenizer.get_vocab():
            raise ValueError(f"model.chat_template: {name} needs the {END_OF_TURN[name]} token, which this "
                             "tokenizer lacks; use vicuna_v1.1 or the model's own template")
        tokenizer.eos_token = END_OF_TURN[name]
    if name == "vicuna_v1.1" and (tokenizer.bos_token is None or tokenizer.eos_token is None):
        raise ValueError("model.chat_template: vicuna_v1.1 needs BOS and EOS tokens, which this tokenizer lacks")
    tokenizer.chat_template = TEMPLATES[name]
    return tokenizer
