"""Grouped-query causal self-attention with RoPE, packed-row masking and an optional KV cache."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx

from reactor_core.models import axes, kv_cache, slot_cache
from reactor_core.models.config import LlamaConfig
from reactor_core.models.rope import apply_rope

_MASKED = -1e30  # finite, so fully masked rows (padding queries) give no NaNs


def attention_mask(
    q_slots: jax.Array, q_segments: jax.Array, k_slots: jax.Array, k_segments: jax.Array
) -> jax.Array:
    """Which keys each query may see: causal in slot order, same segment, not padding.

    q_slots (B, T), q_segments (B, T), k_slots (B, S), k_segments (B, S) -> (B, 1, 1, T, S) bool.
    """
    causal = k_slots[:, None, :] <= q_slots[:, :, None]  # (B, T, S)
    same = (q_segments[:, :, None] == k_segments[:, None, :]) & (k_segments[:, None, :] != 0)  # (B, T, S)
    return (causal & same)[:, None, None]  # (B, 1, 1, T, S)


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, block: int, dtype) -> jax.Array:
    """Attention in query blocks of `block` slots, one block after another (a loop, compiled once).

    q (B, T, KVH, G, D), k/v (B, S, KVH, D), mask (B, 1, 1, T, S) -> (B, T, KVH, G, D); T must
    be a multiple of `block`. The same arithmetic as the plain formulation, but each block's
    (block, S) score tile stays in cache: XLA:CPU otherwise streams a long prompt's full (T, S)
    scores through memory several times per layer, which costs more than the matmuls.
    """
    b, t, kvh, g, d = q.shape
    n = t // block
    qb = jnp.transpose(q.reshape(b, n, block, kvh, g, d), (1, 0, 3, 4, 2, 5))  # (N, B, KVH, G, C, D)
    mb = jnp.moveaxis(mask.reshape(b, 1, 1, n, block, -1), 3, 0)  # (N, B, 1, 1, C, S)
    kh = jnp.transpose(k, (0, 2, 1, 3))  # (B, KVH, S, D)
    vh = jnp.transpose(v, (0, 2, 1, 3)).astype(dtype)  # (B, KVH, S, D)

    def one(args):
        q_block, m_block = args
        scores = jnp.einsum("bkgtd,bksd->bkgts", q_block, kh, preferred_element_type=jnp.float32)  # (B, KVH, G, C, S)
        scores = jnp.where(m_block, scores * (d**-0.5), _MASKED)
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)  # (B, KVH, G, C, S)
        return jnp.einsum("bkgts,bksd->bkgtd", probs, vh)  # (B, KVH, G, C, D)

    out = jax.lax.map(one, (qb, mb))  # (N, B, KVH, G, C, D)
    return jnp.transpose(out, (1, 0, 4, 2, 3, 5)).reshape(b, t, kvh, g, d)  # (B, T, KVH, G, D)


def kernel_enabled() -> bool:
    """Whether training-shaped attention (no cache, segment ids known) runs MLForge's kernel.

    On a single CPU device only: XLA cannot partition the custom call over a mesh, and other
    backends have their own fused attention. REACTOR_ATTENTION=xla turns it off (benchmarks
    and tests compare the two); the einsum formulation below is the reference it matches.
    """
    if os.environ.get("REACTOR_ATTENTION", "mlforge") == "xla":
        return False
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        return False
    mesh = jax.sharding.get_abstract_mesh()
    return mesh.empty or mesh.size == 1


def _cache_kernel():
    """MLForge's slot-cache attention (reads only the used part of each row) where it applies:
    the CPU backend on one device; REACTOR_ATTENTION=xla selects the XLA formulation."""
    if os.environ.get("REACTOR_ATTENTION", "mlforge") == "xla" or jax.default_backend() != "cpu":
        return None
    if jax.device_count() != 1:
        return None
    from mlforge import jax_ops  # lazily: only CPU generation needs it

    return getattr(jax_ops, "cache_attention", None)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """jax.lax.dot_general, except that half-precision matmuls on CPU run as float32.

    XLA:CPU's bfloat16 GEMM is much slower than its float32 one; upcasting the operands and
    rounding the result gives the float32 accumulation an accelerator uses anyway.
    """
    half = (jnp.bfloat16, jnp.float16)
    if jax.default_backend() == "cpu" and lhs.dtype in half and rhs.dtype in half:
        out = jax.lax.dot_general(lhs.astype(jnp.float32), rhs.astype(jnp.float32), dimension_numbers, precision)
        return out.astype(preferred_element_type or lhs.dtype)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type, **kwargs
    )


def _linear(cfg: LlamaConfig, n_in: int, n_out: int, names, *, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=False,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=axes.partitioned(nnx.initializers.normal(0.02), names),
        dot_general=dot_general,
        rngs=rngs,
    )


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.resolved_head_dim
        self.dtype = jnp.dtype(cfg.dtype)
        e, h, kvh = cfg.hidden_size, cfg.num_heads * self.head_dim, cfg.num_kv_heads * self.head_dim
        self.q_proj = _linear(cfg, e, h, (axes.EMBED, axes.HEADS), rngs=rngs)
        self.k_proj = _linear(cfg, e, kvh, (axes.EMBED, axes.KV_HEADS), rngs=rngs)
        self.v_proj = _linear(cfg, e, kvh, (axes.EMBED, axes.KV_HEADS), rngs=rngs)
        self.o_proj = _linear(cfg, h, e, (axes.HEADS, axes.EMBED), rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
        query_block: int = 0,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """x (B, T, E); cache = (keys, values, index) of this layer.

        Returns (out, keys/values): the updated cache (B, S, KVH, D) each, or without a cache this
        call's own rotated keys and values (B, T, KVH, D), which prefill stores and training drops.
        query_block > 0 (prefill of a long prompt) runs `blocked_attention`. segment_ids (B, T),
        given for a plain causal forward over packed rows (training), selects MLForge's fused
        CPU kernel where `kernel_enabled()`; `mask` must then be that forward's mask.
        """
        b, t, _ = x.shape
        d, kvh = self.head_dim, self.num_kv_heads
        groups = self.num_heads // kvh
        q = self.q_proj(x).reshape(b, t, self.num_heads, d)  # (B, T, H, D)
        k = self.k_proj(x).reshape(b, t, kvh, d)  # (B, T, KVH, D)
        v = self.v_proj(x).reshape(b, t, kvh, d)  # (B, T, KVH, D)
        q = axes.constrain(apply_rope(q, cos, sin), (axes.BATCH, axes.LENGTH, axes.HEADS, axes.HEAD_DIM))
        k = axes.constrain(apply_rope(k, cos, sin), (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.HEAD_DIM))
        v = axes.constrain(v, (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.HEAD_DIM))
        if cache is not None:
            cache_k, cache_v, index = cache
            k = kv_cache.write(cache_k, k, index)  # (B, S, KVH, D)
            v = kv_cache.write(cache_v, v, index)  # (B, S, KVH, D)
        new_kv = (k, v)
        if segment_ids is not None and cache is None and not query_block and kernel_enabled():
            from mlforge import jax_ops  # lazily: inference-only callers never need it

            out = jax_ops.attention(q.astype(self.dtype), k.astype(self.dtype), v.astype(self.dtype), segment_ids)
            return self.o_proj(out.reshape(b, t, self.num_heads * d)), new_kv  # (B, T, E)
        q = q.reshape(b, t, kvh, groups, d)  # (B, T, KVH, G, D)
        if query_block:
            out = blocked_attention(q, k, v, mask, query_block, self.dtype)  # (B, T, KVH, G, D)
            return self.o_proj(out.reshape(b, t, self.num_heads * d)), new_kv
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)  # (B, KVH, G, T, S)
        scores = scores * (d**-0.5)
        scores = jnp.where(mask, scores, _MASKED)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # (B, KVH, G, T, S)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(self.dtype))  # (B, T, KVH, G, D)
        out = out.reshape(b, t, self.num_heads * d)  # (B, T, H*D)
        return self.o_proj(out), new_kv

    def forward_slots(self, x, cos, sin, k_cache, v_cache, slots, positions):
        """x (B, T, E) at `positions` (B, T) of cache rows `slots` (B,) (see slot_cache).

        Writes this call's keys/values into the caches (N, S, KVH, D) and attends over each
        row up to the query's position; returns (out (B, T, E), k_cache, v_cache).
        """
        b, t, _ = x.shape
        d, kvh = self.head_dim, self.num_kv_heads
        q = apply_rope(self.q_proj(x).reshape(b, t, self.num_heads, d), cos, sin)  # (B, T, H, D)
        k = apply_rope(self.k_proj(x).reshape(b, t, kvh, d), cos, sin)  # (B, T, KVH, D)
        v = self.v_proj(x).reshape(b, t, kvh, d)  # (B, T, KVH, D)
        k_cache = slot_cache.write(k_cache, k, slots, positions)
        v_cache = slot_cache.write(v_cache, v, slots, positions)
        kernel = _cache_kernel() if k_cache.dtype in (jnp.float32, jnp.float16) else None
        if kernel is not None:
            out = kernel(q.astype(jnp.float32), k_cache, v_cache, slots, positions)  # (B, T, H, D)
        else:
            out = slot_cache.attend(q, k_cache, v_cache, slots, positions)  # (B, T, H, D)
        out = out.astype(self.dtype).reshape(b, t, self.num_heads * d)
        return self.o_proj(out), k_cache, v_cache
