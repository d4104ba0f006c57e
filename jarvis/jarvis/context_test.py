"""Run: bazel test //jarvis:context_test"""

import sys

import pytest

from jarvis.context import ContextOverflowError, fit


def _count(messages):  # one token per word plus two per message, like a template's markers
    return sum(len(m["content"].split()) + 2 for m in messages)


def _conversation(turns):
    out = [{"role": "system", "content": "be brief"}]
    for i in range(turns):
        out += [
            {"role": "user", "content": f"question {i} " * 3},
            {"role": "assistant", "content": f"answer {i} " * 5},
        ]
    return out + [{"role": "user", "content": "last question"}]


def test_fits_untouched():
    messages = _conversation(2)
    fitted = fit(messages, _count, window=1000, reserve=100)
    assert fitted.messages == messages and fitted.dropped == 0
    assert fitted.notice("m", 1000) is None


def test_drops_oldest_pairs_and_keeps_system():
    messages = _conversation(5)
    fitted = fit(messages, _count, window=60, reserve=20)
    assert fitted.messages[0]["role"] == "system"
    assert fitted.messages[1]["role"] == "user"
    assert fitted.messages[-1]["content"] == "last question"
    assert fitted.dropped > 0 and fitted.dropped % 2 == 0
    assert fitted.prompt_tokens <= 40
    assert "left out the" in fitted.notice("prime-135m-chat-v1", 60)


def test_overflow_says_what_to_do():
    with pytest.raises(ContextOverflowError, match="lower max_tokens"):
        fit([{"role": "user", "content": "word " * 50}], _count, window=40, reserve=10)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
