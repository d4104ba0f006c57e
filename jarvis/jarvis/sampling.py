"""Jarvis's sampling defaults, on Prime's `Sampling` (reactor's `SamplingConfig`: one type in every part).

    from jarvis.sampling import DEFAULT, Sampling
    DEFAULT.replace(temperature=0.2)          # what the REPL, the server and the CLI start from

`DEFAULT` is an assistant's conversational setting (temperature 0.7, top-p 0.95, repetition
penalty 1.1, answers up to 512 tokens); Prime's own default is greedy. Stored settings read
back with `from_json`, which fills fields an older row lacks from `DEFAULT`.
"""

from __future__ import annotations

from jarvis_prime import Sampling

__all__ = ["DEFAULT", "Sampling", "defaults", "from_json"]

DEFAULT = Sampling(max_tokens=512, temperature=0.7, top_p=0.95, repetition_penalty=1.1)


def defaults(**changes) -> Sampling:
    """Jarvis's defaults with `changes` applied (a bad value raises ValueError naming the field)."""
    return DEFAULT.replace(**changes)


def from_json(text: str | None) -> Sampling:
    return Sampling.from_json(text, base=DEFAULT)
