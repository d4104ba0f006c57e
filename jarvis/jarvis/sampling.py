"""Sampling settings: one frozen dataclass, validated once, passed to Prime as keyword arguments."""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next answer is sampled. `temperature=0` is greedy; `seed` makes sampling repeatable."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    min_p: float = 0.0
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens", "an integer >= 1")
        _check(_number(self.temperature) and 0.0 <= self.temperature <= 2.0, "temperature", "in [0, 2]")
        _check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "an integer >= 0 (0 = off)")
        _check(_number(self.top_p) and 0.0 < self.top_p <= 1.0, "top_p", "in (0, 1]")
        _check(_number(self.min_p) and 0.0 <= self.min_p < 1.0, "min_p", "in [0, 1)")
        _check(
            _number(self.repetition_penalty) and 0.0 < self.repetition_penalty <= 10.0,
            "repetition_penalty",
            "in (0, 10]",
        )
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", "a list of non-empty strings")
        _check(
            self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)),
            "seed",
            "an integer",
        )

    def replace(self, **changes) -> Sampling:
        return dataclasses.replace(self, **changes)

    def kwargs(self) -> dict:
        """Keyword arguments for PrimeModel.generate/stream/chat/chat_stream."""
        out = dataclasses.asdict(self)
        out["stop"] = list(self.stop) or None
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Sampling:
        """Settings stored by an earlier version may lack fields: the defaults fill them in."""
        if not text:
            return cls()
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, field: str, expected: str) -> None:
    if not ok:
        raise ValueError(f"Sampling.{field} must be {expected}")
