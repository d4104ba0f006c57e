"""TextStream: one token per `next()`, text pieces out, a GenerationResult at the end.

    stream = model.stream("Tell me a joke", max_tokens=64)
    for piece in stream:          # each next() runs exactly one decode step
        print(piece, end="")
    print(stream.result.tokens_per_second)

One step per `next()` lets a server interleave many streams fairly on one thread; a
piece may be "" while a multi-byte character or a possible stop string is pending.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Self

from jarvis_prime.detokenize import Detokenizer
from jarvis_prime.stop import StopMatcher

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """What one generation produced and how fast. `str(result)` is the text.

    tokens_per_second is the decode rate after the first token; prompt_tokens_per_second
    is prompt tokens over time to first token (prefill + first sample).
    """

    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str
    time_to_first_token: float
    prompt_tokens_per_second: float
    tokens_per_second: float
    token_ids: tuple[int, ...] = ()

    def __str__(self) -> str:
        return self.text


class TextStream:
    """Iterator of text pieces over a backend's token iterator (see module docstring)."""

    def __init__(
        self,
        tokens: Iterator[int],
        *,
        tokenizer,
        prompt_tokens: int,
        max_tokens: int,
        eos_token_ids: frozenset[int],
        stop: tuple[str, ...] = (),
    ):
        self._tokens = tokens
        self._detok = Detokenizer(tokenizer)
        self._stops = StopMatcher(stop)
        self._prompt_tokens = prompt_tokens
        self._max_tokens = max_tokens
        self._eos = eos_token_ids
        self._pieces: list[str] = []
        self._ids: list[int] = []
        self._t_start: float | None = None
        self._t_first: float | None = None
        self.result: GenerationResult | None = None

    @property
    def text(self) -> str:
        """The text emitted so far."""
        return "".join(self._pieces)

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self.result is not None:
            raise StopIteration
        if self._t_start is None:
            self._t_start = time.perf_counter()
        try:
            token = next(self._tokens)
        except StopIteration:  # the backend ran out (its own length limit)
            return self._finish("length", self._tail())
        if self._t_first is None:
            self._t_first = time.perf_counter()
        self._ids.append(token)
        if token in self._eos:
            return self._finish("stop", self._tail())
        piece, stopped = self._stops.feed(self._detok.add(token))
        if stopped:
            return self._finish("stop", piece)
        if len(self._ids) >= self._max_tokens:
            return self._finish("length", piece + self._tail())
        self._pieces.append(piece)
        return piece

    def _tail(self) -> str:
        piece, stopped = self._stops.feed(self._detok.flush())
        return piece if stopped else piece + self._stops.flush()

    def close(self) -> None:
        """Stops early; the result's finish_reason is "cancelled" (no-op once finished)."""
        if self.result is None:
            if self._t_start is None:
                self._t_start = time.perf_counter()
            self._finish("cancelled", "")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # Release the backend's KV cache promptly when a caller drops a stream unfinished.
        if getattr(self, "result", 1) is None:
            close = getattr(self._tokens, "close", None)
            if close is not None:
                close()

    def _finish(self, reason: str, piece: str) -> str:
        now = time.perf_counter()
        self._pieces.append(piece)
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()
        ttft = (self._t_first or now) - self._t_start
        n = len(self._ids)
        decode_time = now - self._t_first if self._t_first is not None else 0.0
        self.result = GenerationResult(
            text=self.text,
            prompt_tokens=self._prompt_tokens,
            generated_tokens=n,
            finish_reason=reason,
            time_to_first_token=ttft,
            prompt_tokens_per_second=self._prompt_tokens / ttft if n and ttft > 0 else 0.0,
            tokens_per_second=(n - 1) / decode_time if n > 1 and decode_time > 0 else 0.0,
            token_ids=tuple(self._ids),
        )
        return piece
