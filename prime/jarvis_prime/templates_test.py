import sys

import pytest

from jarvis_prime import PrimeError, templates
from jarvis_prime.tokenizer import render_template


class FakeTokenizer:
    """Enough of a tokenizer to see the rendered text: encode returns code points."""

    def __init__(self, chat_template=None, size=384, bos="<s>", eos="</s>"):
        self.chat_template = chat_template
        self.size, self.bos, self.eos = size, bos, eos
        self.rendered = None

    def __len__(self):
        return self.size

    def apply_chat_template(self, messages, *, chat_template, tokenize, add_generation_prompt):
        self.rendered = render_template(
            chat_template, messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos, eos_token=self.eos
        )
        return self.rendered

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]


def test_tokenizer_template_wins():
    tok = FakeTokenizer(chat_template="{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    ids = templates.render(tok, [{"role": "user", "content": "hi"}])
    assert tok.rendered == "[hi]" and ids == [ord(c) for c in "[hi]"]


def test_chatml_fallback():
    tok = FakeTokenizer()
    templates.render(tok, [{"role": "user", "content": "hi"}])
    assert tok.rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_llama2_fallback_for_sentencepiece_vocab():
    tok = FakeTokenizer(size=32000)
    templates.render(
        tok,
        [
            {"role": "system", "content": "SYS"},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ],
    )
    assert tok.rendered == "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]"


def test_reasoning_adds_a_system_prompt_only_when_missing():
    tok = FakeTokenizer()
    templates.render(tok, [{"role": "user", "content": "2+2?"}], kind="reasoning")
    assert "step by step" in tok.rendered
    templates.render(
        tok, [{"role": "system", "content": "mine"}, {"role": "user", "content": "2+2?"}], kind="reasoning"
    )
    assert "step by step" not in tok.rendered and "mine" in tok.rendered


@pytest.mark.parametrize(
    "messages, match",
    [
        ("hello", "non-empty list"),
        ([], "non-empty list"),
        ([{"content": "x"}], "role"),
        ([{"role": "robot", "content": "x"}], "must be one of"),
        ([{"role": "user", "content": 3}], "must be a string"),
    ],
)
def test_bad_messages(messages, match):
    with pytest.raises(PrimeError, match=match):
        templates.render(FakeTokenizer(), messages)


def test_template_exceptions_become_prime_errors():
    tok = FakeTokenizer(chat_template="{{ raise_exception('roles must alternate') }}")
    with pytest.raises(PrimeError, match="roles must alternate"):
        templates.render(tok, [{"role": "user", "content": "x"}])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
