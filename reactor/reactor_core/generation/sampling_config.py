"""SamplingConfig: the one sampling configuration type of reactor, Prime (`jarvis_prime.Sampling`) and Jarvis.

    config = SamplingConfig(temperature=0.7, top_p=0.95, repetition_penalty=1.1, max_tokens=64)
    model.generate("Hi", **config.kwargs())

Semantics (Hugging Face's order): repetition penalty over every token seen (prompt
included), then temperature, top-k, top-p, min-p; temperature 0 is greedy. Every value is a
runtime input of the compiled programs (`sampling.sample`): changing one compiles nothing.
This module imports no JAX, so the MLX backend and Jarvis can use it anywhere.
"""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; divide positive logits, multiply negative ones
    stop: tuple[str, ...] = ()  # strings that end the answer (not included)
    seed: int | None = None  # None = a fresh random seed per request

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is None:
            object.__setattr__(self, "stop", ())
        elif isinstance(self.stop, (list, tuple)):
            object.__setattr__(self, "stop", tuple(self.stop))
        checks = (
            ("max_tokens", _integer(self.max_tokens) and self.max_tokens >= 1, "an integer >= 1"),
            ("temperature", _number(self.temperature) and self.temperature >= 0, "a number >= 0 (0 = greedy)"),
            ("top_k", _integer(self.top_k) and self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("top_p", _number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1] (1 = off)"),
            ("min_p", _number(self.min_p) and 0 <= self.min_p < 1, "in [0, 1) (0 = off)"),
            (
                "repetition_penalty",
                _number(self.repetition_penalty) and self.repetition_penalty > 0,
                "a number > 0 (1 = off)",
            ),
            ("stop", isinstance(self.stop, tuple) and all(isinstance(s, str) and s for s in self.stop),
             "a list of non-empty strings"),
            ("seed", self.seed is None or _integer(self.seed), "an integer or None"),
        )
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"SamplingConfig.{name} must be {want}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> SamplingConfig:
        return dataclasses.replace(self, **changes)

    def kwargs(self) -> dict:
        """Keyword arguments for PrimeModel.generate/stream/chat/chat_stream."""
        out = dataclasses.asdict(self)
        out["stop"] = list(self.stop) or None
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, base: SamplingConfig | None = None) -> SamplingConfig:
        """Settings stored by an earlier version may lack fields or hold removed ones: `base`
        (default: the type's defaults) fills the missing, unknown ones are dropped."""
        base = base or cls()
        if not text:
            return base
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return base.replace(**{k: v for k, v in data.items() if k in known})


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
