"""Token selection for generation: greedy, temperature, top-k, top-p, min-p, repetition penalty.

Which filters are active is static (part of the compiled step); their values are traced,
so changing temperature or top_p between requests does not recompile.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; HF semantics (divide positive, multiply negative)
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"SamplingConfig.min_p must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"SamplingConfig.repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def flags(self) -> tuple[bool, bool, bool, bool, bool]:
        """Static part: (greedy, top_k, top_p, min_p, repetition penalty) switched on."""
        return (
            self.temperature == 0,
            self.temperature > 0 and self.top_k > 0,
            self.temperature > 0 and self.top_p < 1,
            self.temperature > 0 and self.min_p > 0,
            self.repetition_penalty != 1.0,
        )

    def values(self) -> dict[str, jax.Array]:
        """Traced part of the config."""
        return {
            "temperature": jnp.float32(max(self.temperature, 1e-6)),
            "top_k": jnp.int32(max(self.top_k, 1)),
            "top_p": jnp.float32(self.top_p),
            "min_p": jnp.float32(self.min_p),
            "repetition_penalty": jnp.float32(self.repetition_penalty),
        }


def apply_repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
    """logits (B, V) float32, seen (B, V) bool."""
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalized, logits)


def filter_logits(logits: jax.Array, values: dict, flags: tuple) -> jax.Array:
    """Masks logits (B, V) outside top-k / top-p / min-p with -inf (at least one token survives)."""
    _, use_top_k, use_top_p, use_min_p, _ = flags
    vocab = logits.shape[-1]
    if use_top_k or use_top_p:
        ordered = -jnp.sort(-logits, axis=-1)  # (B, V) descending
        keep = jnp.ones_like(ordered, dtype=bool)
        if use_top_k:
            keep = jnp.arange(vocab)[None, :] < values["top_k"]  # (1, V)
            ordered = jnp.where(keep, ordered, _NEG_INF)
        if use_top_p:
            probs = jax.nn.softmax(ordered, axis=-1)  # (B, V)
            before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each token
            keep = keep & (before < values["top_p"])
        count = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1)  # (B, 1)
        threshold = jnp.take_along_axis(ordered, count - 1, axis=-1)  # (B, 1) smallest kept logit
        logits = jnp.where(logits < threshold, _NEG_INF, logits)
    if use_min_p:
        probs = jax.nn.softmax(logits, axis=-1)  # (B, V)
        floor = values["min_p"] * jnp.max(probs, axis=-1, keepdims=True)  # (B, 1)
        logits = jnp.where(probs < floor, _NEG_INF, logits)
    return logits


def select(logits: jax.Array, key: jax.Array, seen: jax.Array | None, values: dict, flags: tuple) -> jax.Array:
    """Chooses the next token for each row: logits (B, V) -> (B,) int32."""
    logits = logits.astype(jnp.float32)
    if flags[4]:
        logits = apply_repetition_penalty(logits, seen, values["repetition_penalty"])
    if flags[0]:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / values["temperature"], values, flags)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
