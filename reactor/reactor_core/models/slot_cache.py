"""A KV cache of fixed-capacity conversation slots, for a generation engine that serves many.

    cache = SlotCache.init(config, slots=5, capacity=4096)       # allocated once per model
    logits, cache = model.forward_slots(tokens, positions=positions, slots=rows, last=last, cache=cache)

Row n of every layer's keys/values holds one conversation: its token at position p sits in
slot p. Nothing on the device says how much of a row is valid: a query at position p attends
to keys 0..p of its row, so a shorter conversation reusing a row never sees the old tail,
and a conversation that shares a prefix with the row's previous one reuses those slots as
they are (KV reuse across turns). The host engine keeps the bookkeeping.

Writes at a negative position are dropped: that is how batch padding (a decode batch padded
to a fixed size, the tail of a prefill chunk) leaves every row untouched.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reactor_core.models.config import LlamaConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotCache:
    keys: tuple[jax.Array, ...]  # per layer (N, S, KVH, D)
    values: tuple[jax.Array, ...]  # per layer (N, S, KVH, D)

    @classmethod
    def init(cls, config: LlamaConfig, *, slots: int, capacity: int, dtype=jnp.float32) -> SlotCache:
        if slots < 1 or capacity < 1:
            raise ValueError(f"SlotCache needs slots >= 1 and capacity >= 1, got {slots} and {capacity}")
        shape = (slots, capacity, config.num_kv_heads, config.resolved_head_dim)
        return cls(
            keys=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
            values=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        )

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[1]

    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.keys + self.values)

    @staticmethod
    def bytes_per_token(config: LlamaConfig, itemsize: int = 4) -> int:
        return 2 * config.num_layers * config.num_kv_heads * config.resolved_head_dim * itemsize


def write(cache_kv: jax.Array, new: jax.Array, slots: jax.Array, positions: jax.Array) -> jax.Array:
    """cache_kv (N, S, KVH, D) <- new (B, T, KVH, D) at [slots[b], positions[b, t]]; negative positions are dropped."""
    capacity = cache_kv.shape[1]
    where = jnp.where(positions < 0, capacity, positions)  # out of bounds: dropped
    rows = jnp.broadcast_to(slots[:, None], positions.shape)  # (B, T)
    return cache_kv.at[rows, where].set(new.astype(cache_kv.dtype), mode="drop")


def attend(
    q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, slots: jax.Array, positions: jax.Array
) -> jax.Array:
    """Causal attention of queries over their cache rows, in XLA (any backend).

    q (B, T, H, D); k/v_cache (N, S, KVH, D); slots (B,); positions (B, T), < 0 = padding
    (zeros out). Query (b, t) sees keys 0..positions[b, t] of row slots[b]. The same contract
    as MLForge's CPU kernel (`mlforge.jax_ops.cache_attention`), which reads only the used
    part of each row; this reads the whole capacity.
    """
    b, t, h, d = q.shape
    kvh = k_cache.shape[2]
    k = k_cache[slots]  # (B, S, KVH, D)
    v = v_cache[slots]  # (B, S, KVH, D)
    qg = q.reshape(b, t, kvh, h // kvh, d)  # (B, T, KVH, G, D)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * (d**-0.5)
    visible = jnp.arange(k.shape[1])[None, None, :] <= positions[:, :, None]  # (B, T, S)
    scores = jnp.where(visible[:, None, None], scores, -1e30)  # (B, KVH, G, T, S)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(q.dtype))  # (B, T, KVH, G, D)
    out = jnp.where((positions >= 0)[:, :, None, None, None], out, 0)
    return out.reshape(b, t, h, d)
