"""Separates a reasoning model's thinking from its answer, while the text streams in.

Two conventions:
  "tags"         `<think>...</think>` then the answer (an output that does not open the
                 tag is all answer). `opened=True` is for chat templates that open the
                 tag in the prompt, so only the closing tag appears in the output.
  "answer_line"  Prime's reasoning template: step-by-step thinking, then the final answer
                 on a line starting with "Answer:".
A marker may arrive split across pieces, so text that could be the start of one is held
back until the next piece decides it. An output whose thinking never ends was not
thinking after all: finish() hands it back as the answer and sets `reclassified`.
"""

from __future__ import annotations

import dataclasses

OPEN = "<think>"
CLOSE = "</think>"
ANSWER_LINE = "\nAnswer:"
CONVENTIONS = ("tags", "answer_line")


@dataclasses.dataclass(frozen=True)
class Split:
    thinking: str
    answer: str


def split(text: str, *, convention: str = "tags", opened: bool = False) -> Split:
    """The thinking and answer of a complete output."""
    s = ThinkingSplitter(convention=convention, opened=opened)
    parts = s.feed(text) + s.finish()
    return Split(
        thinking="" if s.reclassified else "".join(t for kind, t in parts if kind == "thinking"),
        answer="".join(t for kind, t in parts if kind == "answer"),
    )


def convention_for(template: str) -> str:
    """The convention of a Prime template kind ("chat" models may still use tags)."""
    return "answer_line" if template == "reasoning" else "tags"


class ThinkingSplitter:
    """Feed text pieces in; get back ("thinking" | "answer", text) parts, in order. An
    output without markers comes back unchanged, as the answer."""

    def __init__(self, *, convention: str = "tags", opened: bool = False):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self._close = CLOSE if convention == "tags" else ANSWER_LINE
        self._implicit = opened or convention == "answer_line"
        self._state = "thinking" if self._implicit else "start"
        # A virtual newline lets "Answer:" on the very first line match ANSWER_LINE.
        self._pending = "\n" if convention == "answer_line" else ""
        self._thinking: list[str] = []
        self._closed = False
        self.reclassified = False

    @property
    def in_thinking(self) -> bool:
        return self._state == "thinking"

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self._pending += piece
        out: list[tuple[str, str]] = []
        while self._pending:
            if self._state == "start":
                stripped = self._pending.lstrip()
                if stripped.startswith(OPEN):
                    self._pending = stripped[len(OPEN) :]
                    self._state = "thinking"
                    continue
                if OPEN.startswith(stripped):  # perhaps the start of "<think>": wait
                    break
                self._state = "answer"
                continue
            if self._state == "after":  # whitespace between the marker and the answer
                self._pending = self._pending.lstrip(" \n")
                if self._pending:
                    self._state = "answer"
                continue
            if self._state == "answer":
                out.append(("answer", self._pending))
                self._pending = ""
                break
            at = self._pending.find(self._close)
            if at >= 0:
                self._emit_thinking(out, self._pending[:at])
                self._pending = self._pending[at + len(self._close) :]
                self._state = "after"
                self._closed = True
                continue
            keep = _partial_suffix(self._pending, self._close)
            self._emit_thinking(out, self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep :]
            break
        return out

    def finish(self) -> list[tuple[str, str]]:
        """Flushes held-back text at the end of the output."""
        rest, self._pending = self._pending, ""
        if self._state == "thinking" and self._implicit and not self._closed:
            self.reclassified = True
            text = ("".join(self._thinking) + rest).strip()
            return [("answer", text)] if text else []
        if self._state == "thinking":
            out: list[tuple[str, str]] = []
            self._emit_thinking(out, rest)
            return out
        if self._state == "start":  # no tag: the output is the answer, whitespace and all
            return [("answer", rest)] if rest else []
        if self._state == "after":
            return [("answer", rest)] if rest.strip() else []
        return [("answer", rest)] if rest else []

    def _emit_thinking(self, out: list, text: str) -> None:
        if not self._thinking:
            text = text.lstrip("\n")
        if text:
            self._thinking.append(text)
            out.append(("thinking", text))


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
