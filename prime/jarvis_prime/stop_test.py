import sys

import pytest

from jarvis_prime.stop import StopMatcher


def feed_all(stop, pieces):
    m = StopMatcher(stop)
    out = []
    for p in pieces:
        text, stopped = m.feed(p)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + m.flush(), False


def test_no_stop_strings_passes_through():
    assert feed_all(None, ["a", "b"]) == ("ab", False)


def test_stop_inside_one_piece():
    assert feed_all(["END"], ["hello END world"]) == ("hello ", True)


def test_stop_split_over_pieces_is_never_emitted():
    m = StopMatcher(["\nUser:"])
    assert m.feed("Hi\nUs") == ("Hi", False)
    assert m.feed("er: x") == ("", True)


def test_held_prefix_released_when_it_diverges():
    m = StopMatcher(["abc"])
    assert m.feed("xab") == ("x", False)
    assert m.feed("d") == ("abd", False)


def test_earliest_of_several_stops():
    assert feed_all(["world", "lo"], ["hello world"]) == ("hel", True)


def test_flush_returns_held_text():
    assert feed_all(["STOP"], ["the end ST"]) == ("the end ST", False)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
