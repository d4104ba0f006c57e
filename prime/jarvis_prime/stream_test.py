import sys
import tempfile

import pytest

from jarvis_prime.stream import GenerationResult, TextStream
from jarvis_prime.testing import make_tokenizer
from jarvis_prime.tokenizer import Tokenizer

EOS = 2


@pytest.fixture(scope="module")
def tok():
    d = tempfile.mkdtemp()
    make_tokenizer(d)
    return Tokenizer.from_dir(d)


class Tokens:
    """A fake backend iterator that counts how many steps were taken."""

    def __init__(self, ids):
        self.ids, self.steps, self.closed = list(ids), 0, False

    def __iter__(self):
        return self

    def __next__(self):
        if self.steps >= len(self.ids):
            raise StopIteration
        self.steps += 1
        return self.ids[self.steps - 1]

    def close(self):
        self.closed = True


def make(tok, text, *, eos=False, max_tokens=100, stop=()):
    ids = tok.encode(text, add_special_tokens=False) + ([EOS] if eos else [])
    tokens = Tokens(ids)
    stream = TextStream(
        tokens, tokenizer=tok, prompt_tokens=7, max_tokens=max_tokens, eos_token_ids=frozenset({EOS}), stop=stop
    )
    return stream, tokens


def test_one_token_per_next(tok):
    stream, tokens = make(tok, "Hello world 😀!", eos=True)
    pieces = []
    while True:
        before = tokens.steps
        try:
            pieces.append(next(stream))
        except StopIteration:
            break
        assert tokens.steps == before + 1
    assert "".join(pieces) == "Hello world 😀!"
    assert "" in pieces  # the emoji's first bytes produce no text yet
    r = stream.result
    assert isinstance(r, GenerationResult)
    assert r.finish_reason == "stop" and str(r) == r.text == "Hello world 😀!"
    assert r.prompt_tokens == 7 and r.generated_tokens == len(tokens.ids) and r.token_ids[-1] == EOS
    assert r.time_to_first_token >= 0 and r.tokens_per_second > 0 and r.prompt_tokens_per_second > 0
    assert tokens.closed


def test_length_limit(tok):
    stream, tokens = make(tok, "one two three four five six", max_tokens=3)
    text = "".join(stream)
    assert stream.result.finish_reason == "length" and stream.result.generated_tokens == 3
    assert text == tok.decode(tokens.ids[:3])


def test_backend_running_out_is_length(tok):
    stream, _ = make(tok, "short")
    assert "".join(stream) == "short" and stream.result.finish_reason == "length"


def test_stop_string(tok):
    stream, tokens = make(tok, "Paris is nice. User: more", stop=["User:"])
    assert "".join(stream) == "Paris is nice. "
    assert stream.result.finish_reason == "stop" and stream.result.text == "Paris is nice. "
    assert tokens.steps < len(tokens.ids) and tokens.closed


def test_close_cancels(tok):
    stream, tokens = make(tok, "a b c d e f g")
    next(stream)
    next(stream)
    stream.close()
    assert stream.result.finish_reason == "cancelled" and stream.result.generated_tokens == 2
    assert tokens.closed and list(stream) == []
    stream.close()  # idempotent
    assert stream.result.finish_reason == "cancelled"


def test_close_before_start(tok):
    stream, tokens = make(tok, "abc")
    with stream:
        pass
    assert stream.result.finish_reason == "cancelled" and stream.result.generated_tokens == 0 and tokens.steps == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
