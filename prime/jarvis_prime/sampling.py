"""Sampling options shared by every backend, validated once with messages naming the option.

Semantics (both backends): repetition penalty first (Hugging Face's: divide positive
logits, multiply negative ones, over every token seen, prompt included), then
temperature, then top-k, top-p, min-p; temperature 0 is greedy and ignores the filters.
"""

from __future__ import annotations

import dataclasses

from jarvis_prime.errors import PrimeError


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is None:
            object.__setattr__(self, "stop", ())
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        checks = (
            ("max_tokens", isinstance(self.max_tokens, int) and self.max_tokens >= 1, "an integer >= 1"),
            ("temperature", _number(self.temperature) and self.temperature >= 0, "a number >= 0 (0 = greedy)"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("top_p", _number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1] (1 = off)"),
            ("min_p", _number(self.min_p) and 0 <= self.min_p < 1, "in [0, 1) (0 = off)"),
            ("repetition_penalty", _number(self.repetition_penalty) and self.repetition_penalty > 0, "> 0 (1 = off)"),
            ("stop", all(isinstance(s, str) for s in self.stop), "a list of strings"),
            ("seed", self.seed is None or isinstance(self.seed, int), "an integer or None"),
        )
        for name, ok, want in checks:
            if not ok:
                raise PrimeError(f"{name} must be {want}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
