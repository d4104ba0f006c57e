"""Token selection for generation: greedy, temperature, top-k, top-p, min-p, repetition penalty.

`sample` is the batched sampler: every setting is a per-row traced array (`SamplingArrays`),
so one compiled decode step serves any mix of requests. Order and meaning follow Hugging
Face: repetition penalty, then (temperature 0: argmax) logits / temperature, top-k, top-p,
min-p, and an inverse-CDF pick with the row's uniform over the survivors sorted by
probability (ties: lower token id first). The filters run on the `CANDIDATES` largest
logits; a row whose survivors may lie beyond them is redone on the `WIDE` largest, and one
whose survivors lie beyond those on the exact full-vocabulary sort. Each wider tier is
compiled in but only run (`lax.cond`) when some row of the batch needs it.

The settings themselves are `SamplingConfig` (sampling_config.py, re-exported here): one
type for reactor, Prime and Jarvis; `SamplingArrays.rows` turns requests' configs into rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reactor_core.generation.sampling_config import SamplingConfig

__all__ = ["CANDIDATES", "WIDE", "SamplingArrays", "SamplingConfig", "apply_repetition_penalty", "row_uniforms", "sample"]

_NEG_INF = -jnp.inf

# Fast-path width: filters run on the top CANDIDATES logits (lax.top_k) instead of a sort.
CANDIDATES = 64
# Second tier, for rows whose survivors go past CANDIDATES (a flat distribution under top-p
# 0.95, say): the top WIDE logits. On 2 cores and 49,152 logits, top-k of 1,025 for 8 rows
# takes ~4.5 ms where the full sort takes ~110 ms, and one such row in a batch made every
# row pay for the sort.
WIDE = 1024


def apply_repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
    """logits (B, V) float32, seen (B, V) bool."""
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalized, logits)


# ---- batched sampler: per-row runtime settings ----

_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
_ALLOWED = {
    "temperature": (lambda v: v >= 0, ">= 0 (0 = greedy)"),
    "top_k": (lambda v: v >= 0 and float(v).is_integer(), "an integer >= 0 (0 = off)"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
    "min_p": (lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
    "repetition_penalty": (lambda v: v > 0, "> 0 (1 = off)"),
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingArrays:
    """Sampling settings, one entry per batch row; traced, so new values never recompile."""

    temperature: jax.Array  # (B,) float32, 0 = greedy
    top_k: jax.Array  # (B,) int32, 0 = off
    top_p: jax.Array  # (B,) float32, 1 = off
    min_p: jax.Array  # (B,) float32, 0 = off
    repetition_penalty: jax.Array  # (B,) float32, 1 = off

    @classmethod
    def rows(cls, settings: Sequence[Mapping[str, Any] | Any]) -> SamplingArrays:
        """Stacks per-request settings (dicts or objects with these field names; a missing
        name takes its off value) into numpy-backed arrays for the host to pass in."""
        columns: dict[str, list] = {name: [] for name in _DEFAULTS}
        for row, setting in enumerate(settings):
            for name, default in _DEFAULTS.items():
                if isinstance(setting, Mapping):
                    value = setting.get(name, default)
                else:
                    value = getattr(setting, name, default)
                ok, allowed = _ALLOWED[name]
                if not ok(value):
                    raise ValueError(f"SamplingArrays row {row}: {name} must be {allowed}, got {value!r}")
                columns[name].append(value)
        return cls(
            temperature=np.asarray(columns["temperature"], np.float32),
            top_k=np.asarray(columns["top_k"], np.int32),
            top_p=np.asarray(columns["top_p"], np.float32),
            min_p=np.asarray(columns["min_p"], np.float32),
            repetition_penalty=np.asarray(columns["repetition_penalty"], np.float32),
        )


def row_uniforms(seeds: jax.Array, steps: jax.Array) -> jax.Array:
    """(B,) uint32 seeds, (B,) int32 steps -> (B,) float32 in [0, 1).

    Row i draws from fold_in(key(seeds[i]), steps[i]) alone, so a request's tokens do not
    depend on which other requests share its batch.
    """

    def draw(seed: jax.Array, step: jax.Array) -> jax.Array:
        return jax.random.uniform(jax.random.fold_in(jax.random.key(seed), step))

    return jax.vmap(draw)(jnp.asarray(seeds, jnp.uint32), jnp.asarray(steps, jnp.int32))


def _pick(values: jax.Array, ids: jax.Array, lse: jax.Array, params: SamplingArrays, uniforms: jax.Array) -> jax.Array:
    """Filters and picks over logits sorted descending: values, ids (B, W) -> (B,) int32.

    lse (B,) is the full-vocabulary logsumexp, so top-p sees true probabilities even
    when W is only the candidate set.
    """
    width = values.shape[-1]
    pos = jnp.arange(width)[None, :]  # (1, W)
    top_k = params.top_k[:, None]  # (B, 1)
    in_k = (top_k == 0) | (pos < top_k)  # (B, W)
    # Top-p renormalizes after top-k: over the first top_k tokens, else over the whole vocab.
    norm = jnp.where(params.top_k > 0, jax.nn.logsumexp(jnp.where(in_k, values, _NEG_INF), axis=-1), lse)
    probs = jnp.where(in_k, jnp.exp(values - norm[:, None]), 0.0)  # (B, W)
    mass = jnp.cumsum(probs, axis=-1)
    before = jnp.concatenate([jnp.zeros_like(mass[:, :1]), mass[:, :-1]], axis=-1)  # mass strictly before
    ratio = jnp.exp(values - values[:, :1])  # (B, W) probability / top probability
    n_k = jnp.where(params.top_k > 0, jnp.minimum(params.top_k, width), width)
    n_p = jnp.where(params.top_p >= 1, width, jnp.sum(before < params.top_p[:, None], axis=-1))
    n_m = jnp.sum(ratio >= params.min_p[:, None], axis=-1)
    count = jnp.maximum(jnp.minimum(jnp.minimum(n_k, n_p), n_m), 1)  # (B,) survivors: a prefix
    weights = jnp.where(pos < count[:, None], ratio, 0.0)
    cdf = jnp.cumsum(weights, axis=-1)  # (B, W)
    target = uniforms * cdf[:, -1]
    index = jnp.minimum(jnp.sum(cdf <= target[:, None], axis=-1), count - 1)  # first cdf > target
    return jnp.take_along_axis(ids, index[:, None], axis=-1)[:, 0].astype(jnp.int32)


def _fits(values: jax.Array, lse: jax.Array, params: SamplingArrays) -> jax.Array:
    """(B,) whether every survivor is among the first W of values (B, W + 1)."""
    width = values.shape[-1] - 1
    by_k = (params.top_k >= 1) & (params.top_k <= width)
    # Past top_k's reach only top-p and min-p can stop inside; top-p needs top_k off so
    # that its normalizer is the full logsumexp.
    mass = jnp.sum(jnp.exp(values[:, :width] - lse[:, None]), axis=-1)
    by_p = (params.top_k == 0) & (params.top_p < 1) & (mass >= params.top_p)
    outside = jnp.exp(values[:, width] - values[:, 0]) < params.min_p  # candidate W+1 dropped
    by_m = ((params.top_k == 0) | (params.top_p >= 1)) & outside
    return by_k | by_p | by_m


def _top(scaled: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """The width + 1 largest (values, ids) per row; the extra one tells _fits where they stop."""
    # The barrier keeps XLA from folding our slices into top_k, which turns it into a full sort.
    return jax.lax.optimization_barrier(jax.lax.top_k(scaled, width + 1))  # (B, W + 1)


def sample(
    logits: jax.Array,
    params: SamplingArrays,
    seen: jax.Array,
    uniforms: jax.Array,
    *,
    candidates: int = CANDIDATES,
    wide: int = WIDE,
) -> jax.Array:
    """Chooses each row's next token: logits (B, V), seen (B, V) bool, uniforms (B,) -> (B,) int32.

    `candidates` and `wide` (static) are the two tiers' widths; tests shrink them to reach
    their edges.
    """
    logits = apply_repetition_penalty(logits.astype(jnp.float32), seen, params.repetition_penalty[:, None])
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # (B,) ties: lower id
    sampled = params.temperature > 0
    scaled = logits / jnp.where(sampled, params.temperature, 1.0)[:, None]  # (B, V)
    scaled = jnp.where(scaled == 0, 0.0, scaled)  # top_k and sort order -0.0 below 0.0; ties must tie
    lse = jax.nn.logsumexp(scaled, axis=-1)  # (B,)
    vocab = scaled.shape[-1]
    if candidates >= vocab:  # the candidates are the whole vocabulary: always exact
        values, ids = jax.lax.top_k(scaled, vocab)
        return jnp.where(sampled, _pick(values, ids, lse, params, uniforms), greedy)

    def exact(fallback: jax.Array, tokens: jax.Array) -> jax.Array:
        """tokens, with the rows in `fallback` picked over the whole sorted vocabulary."""
        iota = jax.lax.broadcasted_iota(jnp.int32, scaled.shape, 1)
        neg, order = jax.lax.sort((-scaled, iota), dimension=1, is_stable=True, num_keys=1)  # (B, V)
        return jnp.where(fallback, _pick(-neg, order, lse, params, uniforms), tokens)

    def second(fallback: jax.Array, tokens: jax.Array) -> jax.Array:
        """tokens, with the rows in `fallback` picked over the `wide` largest logits (or exactly)."""
        values, ids = _top(scaled, wide)
        tokens = jnp.where(fallback, _pick(values[:, :wide], ids[:, :wide], lse, params, uniforms), tokens)
        beyond = fallback & ~_fits(values, lse, params)
        return jax.lax.cond(jnp.any(beyond), exact, lambda _, t: t, beyond, tokens)

    values, ids = _top(scaled, candidates)
    tokens = _pick(values[:, :candidates], ids[:, :candidates], lse, params, uniforms)
    fallback = sampled & ~_fits(values, lse, params)
    wider = second if candidates < wide < vocab else exact
    tokens = jax.lax.cond(jnp.any(fallback), wider, lambda _, t: t, fallback, tokens)
    return jnp.where(sampled, tokens, greedy)
