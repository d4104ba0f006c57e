"""Chat templates: the tokenizer's own when it ships one, else a built-in by model family.

The catalogue's template kind adds behaviour on top: "reasoning" models get a system
message asking for step-by-step reasoning when the conversation has none.
"""

from __future__ import annotations

from jarvis_prime.errors import PrimeError

ROLES = ("system", "user", "assistant")

REASONING_SYSTEM = (
    "You are a careful reasoner. Think through the problem step by step, showing your reasoning, "
    "then give the final answer on its own line, starting with 'Answer:'."
)

# Llama-2 chat: [INST] turns, the system prompt folded into the first user turn.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

# ChatML, for local models whose tokenizer ships no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def check_messages(messages) -> list[dict]:
    """Validates chat messages: a non-empty list of {"role", "content"} with known roles."""
    if isinstance(messages, str) or not isinstance(messages, (list, tuple)) or not messages:
        raise PrimeError('messages must be a non-empty list of {"role": ..., "content": ...} dicts')
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PrimeError(f'messages[{i}] must be a dict with "role" and "content", got {m!r}')
        if m["role"] not in ROLES:
            raise PrimeError(f"messages[{i}]['role'] must be one of {ROLES}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise PrimeError(f"messages[{i}]['content'] must be a string, got {type(m['content']).__name__}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def builtin_template(tokenizer) -> str:
    """A template for tokenizers without one: Llama-2 for SentencePiece Llama vocabularies."""
    if len(tokenizer) in (32000, 32001) and "[INST]" not in (tokenizer.chat_template or ""):
        return LLAMA2_TEMPLATE
    return CHATML_TEMPLATE


def render(tokenizer, messages, *, kind: str = "chat") -> list[int]:
    """Token ids of `messages` under the chat template, ending with the assistant's turn."""
    messages = check_messages(messages)
    if kind == "reasoning" and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": REASONING_SYSTEM}, *messages]
    template = tokenizer.chat_template or builtin_template(tokenizer)
    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    except Exception as err:  # noqa: BLE001 - jinja2 TemplateError, e.g. roles that do not alternate
        raise PrimeError(f"The model's chat template rejects these messages: {err}") from None
    return tokenizer.encode(text, add_special_tokens=False)
