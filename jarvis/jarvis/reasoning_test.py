"""Run: bazel test //jarvis:reasoning_test"""

import sys

import pytest

from jarvis.reasoning import ThinkingSplitter, split


def _stream(text, size, **kw):
    s = ThinkingSplitter(**kw)
    parts = []
    for i in range(0, len(text), size):
        parts += s.feed(text[i : i + size])
    parts += s.finish()
    return s, parts


def _joined(parts, kind):
    return "".join(t for k, t in parts if k == kind)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_tags_split_in_any_piece_size(size):
    s, parts = _stream("  <think>\nfirst, 2+2\n</think>\n\nIt is 4.", size)
    assert _joined(parts, "thinking") == "first, 2+2\n"
    assert _joined(parts, "answer") == "It is 4."
    assert not s.reclassified


@pytest.mark.parametrize("size", [1, 4, 100])
def test_no_tags_is_all_answer(size):
    _, parts = _stream("Hello <there>, no thinking", size)
    assert _joined(parts, "answer") == "Hello <there>, no thinking"
    assert _joined(parts, "thinking") == ""


@pytest.mark.parametrize("text", ["\n\n\n", "  x", "\n<b>hi</b>", "<thin"])
def test_untagged_output_is_unchanged(text):
    for size in (1, 2, 50):
        _, parts = _stream(text, size)
        assert _joined(parts, "answer") == text and _joined(parts, "thinking") == ""


def test_template_opened_tag():
    assert split("hmm</think>yes", opened=True) == split("<think>hmm</think>yes")
    result = split("never closed", opened=True)
    assert (result.thinking, result.answer) == ("", "never closed")


@pytest.mark.parametrize("size", [1, 3, 100])
def test_answer_line_convention(size):
    s, parts = _stream("Step 1: add.\nStep 2: check.\nAnswer: 4", size, convention="answer_line")
    assert _joined(parts, "thinking") == "Step 1: add.\nStep 2: check."
    assert _joined(parts, "answer") == "4"
    assert not s.reclassified


def test_answer_line_without_marker_is_reclassified():
    s, parts = _stream("Just 4.", 2, convention="answer_line")
    assert s.reclassified
    assert parts[-1] == ("answer", "Just 4.")
    assert split("Answer: 4", convention="answer_line").answer == "4"


def test_unknown_convention():
    with pytest.raises(ValueError, match="convention"):
        ThinkingSplitter(convention="xml")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
