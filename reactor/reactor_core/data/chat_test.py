"""Tests for chat templating and the exact assistant-token loss mask."""

import copy
import sys

import numpy as np
import pytest

from reactor_core.data import chat, schema, testing_tokenizers

M = schema.Message
CONVERSATION = (
    M("system", "You answer in one line."),
    M("user", "What is 2 + 2?"),
    M("assistant", "It is 4."),
    M("user", "And 3 + 3?"),
    M("assistant", " Six, with a leading space\nand a newline."),
)


@pytest.fixture(scope="module")
def smol():
    return testing_tokenizers.smollm2_tokenizer()


@pytest.fixture(scope="module")
def tiny():
    return testing_tokenizers.tiny_tokenizer()


def trained_text(tokenizer, ids, mask):
    """Decodes each run of masked tokens separately."""
    runs, current = [], []
    for i, m in zip(ids.tolist(), mask.tolist()):
        if m:
            current.append(i)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_smollm2_mask_is_exactly_the_assistant_turns(smol):
    template = chat.ChatTemplate(smol)
    assert not template.is_fallback
    ids, mask = chat.encode_chat(template, CONVERSATION)
    assert ids.dtype == np.int32 and mask.dtype == np.uint8 and ids.shape == mask.shape
    # Same tokens as the tokenizer's own chat tokenization.
    expected = smol.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CONVERSATION]
    )
    expected = (
        expected["input_ids"]
        if isinstance(expected, dict) or hasattr(expected, "keys")
        else expected
    )
    np.testing.assert_array_equal(ids, expected)
    assert trained_text(smol, ids, mask) == [
        "It is 4.<|im_end|>",
        " Six, with a leading space\nand a newline.<|im_end|>",
    ]


def test_smollm2_default_system_prompt_is_not_trained(smol):
    template = chat.ChatTemplate(smol)
    ids, mask = chat.encode_chat(template, (M("user", "Hi"), M("assistant", "Hello")))
    assert "SmolLM" in smol.decode(ids)  # the template adds a system prompt
    assert trained_text(smol, ids, mask) == ["Hello<|im_end|>"]


def test_loss_on_all(smol):
    ids, mask = chat.encode_chat(chat.ChatTemplate(smol), CONVERSATION, loss_on="all")
    assert mask.all() and len(ids) > 20


def test_fallback_template_is_chatml(tiny):
    template = chat.ChatTemplate(tiny)
    assert template.is_fallback
    text = template.render(CONVERSATION[1:3])
    assert (
        text
        == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\nIt is 4.<|im_end|>\n"
    )
    ids, mask = chat.encode_chat(template, CONVERSATION)
    assert tiny.decode(ids) == template.render(CONVERSATION)
    assert trained_text(tiny, ids, mask) == [
        "It is 4.<|im_end|>",
        " Six, with a leading space\nand a newline.<|im_end|>",
    ]


class _SlowTokenizer:
    """The tiny tokenizer without offsets, to exercise the piecewise path."""

    is_fast = False

    def __init__(self, tok):
        self._tok = tok
        self.chat_template = None

    def __call__(self, text, **kw):
        return self._tok(text, **kw)

    def apply_chat_template(self, *a, **kw):
        return self._tok.apply_chat_template(*a, **kw)


def test_slow_tokenizer_path_matches_fast(tiny):
    fast = chat.encode_chat(chat.ChatTemplate(tiny), CONVERSATION)
    slow = chat.encode_chat(chat.ChatTemplate(_SlowTokenizer(tiny)), CONVERSATION)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


def test_text_rows_train_everything_and_end_with_eos(smol):
    ids, mask = chat.encode_text(smol, "Plain text.")
    assert ids[-1] == smol.eos_token_id and mask.all()
    assert smol.decode(ids[:-1]) == "Plain text."


def test_preference_masks_cover_the_response_only(smol):
    ex = schema.PreferenceExample((M("user", "Capital of France?"),), "Paris.", "Rome, surely.")
    (c_ids, c_mask), (r_ids, r_mask) = chat.encode_preference(chat.ChatTemplate(smol), ex)
    assert trained_text(smol, c_ids, c_mask) == ["Paris.<|im_end|>"]
    assert trained_text(smol, r_ids, r_mask) == ["Rome, surely.<|im_end|>"]
    start = int(np.argmax(c_mask))
    assert start == int(np.argmax(r_mask))
    np.testing.assert_array_equal(c_ids[:start], r_ids[:start])  # shared prompt tokens


def test_template_that_is_not_prefix_stable_is_a_data_error(tiny):
    tok = copy.deepcopy(tiny)
    # Renders the conversation newest first, so a prefix is not a prefix of the text.
    tok.chat_template = (
        "{% for m in messages|reverse %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    with pytest.raises(schema.DataError, match="prefix"):
        chat.encode_chat(chat.ChatTemplate(tok), CONVERSATION)
    ids, mask = chat.encode_chat(chat.ChatTemplate(tok), CONVERSATION, loss_on="all")
    assert mask.all()


def test_template_exception_is_a_data_error(tiny):
    tok = copy.deepcopy(tiny)
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(schema.DataError, match="roles must alternate"):
        chat.encode_chat(chat.ChatTemplate(tok), CONVERSATION)


def test_pad_token_id(smol, tiny):
    assert chat.pad_token_id(smol) == smol.pad_token_id
    assert chat.pad_token_id(tiny) == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
