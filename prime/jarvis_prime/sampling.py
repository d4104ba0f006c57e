"""Sampling options of every backend: reactor's `SamplingConfig`, the one type reactor, Prime and
Jarvis share, under Prime's name `Sampling`.

Semantics (both backends): repetition penalty first (Hugging Face's: divide positive
logits, multiply negative ones, over every token seen, prompt included), then
temperature, then top-k, top-p, min-p; temperature 0 is greedy and ignores the filters.
Bad values raise ValueError naming the option (PrimeModel turns it into a PrimeError).
"""

from __future__ import annotations

from reactor_core.generation.sampling_config import SamplingConfig as Sampling

__all__ = ["Sampling"]
