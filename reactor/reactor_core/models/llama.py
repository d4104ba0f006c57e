"""Llama-family decoder in Flax NNX (Llama 2/3, SmolLM2): the model the trainer and Prime call.

Module names mirror Hugging Face's `LlamaForCausalLM` (`model.layers.3.self_attn.q_proj`,
`mlp.gate_proj`, `lm_head`), so checkpoint and PEFT names map one to one; NNX kernels are
stored (in, out), the transpose of HF's `weight`.

    model = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    logits = model(tokens, positions=positions, segment_ids=segment_ids)  # (B, T, V)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from reactor_core.models import axes
from reactor_core.models.attention import Attention, _linear, attention_mask, dot_general
from reactor_core.models.config import LlamaConfig
from reactor_core.models.kv_cache import KVCache
from reactor_core.models.norms import RMSNorm
from reactor_core.models.rope import inverse_frequencies, rope_tables


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        e, m = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(cfg, e, m, (axes.EMBED, axes.MLP), rngs=rngs)
        self.up_proj = _linear(cfg, e, m, (axes.EMBED, axes.MLP), rngs=rngs)
        self.down_proj = _linear(cfg, m, e, (axes.MLP, axes.EMBED), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)  # (B, T, M)
        h = axes.constrain(h, (axes.BATCH, axes.LENGTH, axes.MLP))
        return self.down_proj(h)  # (B, T, E)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        norm = dict(eps=cfg.rms_norm_eps, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
        self.input_layernorm = RMSNorm(cfg.hidden_size, **norm, rngs=rngs)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache=None):
        attn, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        x = x + attn  # (B, T, E)
        x = x + self.mlp(self.post_attention_layernorm(x))  # (B, T, E)
        return axes.constrain(x, (axes.BATCH, axes.LENGTH, axes.EMBED)), new_kv


def _call_layer(layer, x, cos, sin, mask):
    return layer(x, cos, sin, mask)[0]


class LlamaBackbone(nnx.Module):
    """Embedding, decoder layers and final norm (HF's `LlamaModel`)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=axes.partitioned(nnx.initializers.normal(0.02), (axes.VOCAB, axes.EMBED)),
            rngs=rngs,
        )
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(
            cfg.hidden_size,
            eps=cfg.rms_norm_eps,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            rngs=rngs,
        )


class Llama(nnx.Module):
    """Causal LM: `model(tokens, positions=, segment_ids=) -> logits (B, T, V)` in float32."""

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.model = LlamaBackbone(config, rngs=rngs)
        if not config.tie_word_embeddings:
            self.lm_head = _linear(config, config.hidden_size, config.vocab_size, (axes.EMBED, axes.VOCAB), rngs=rngs)

    def __call__(
        self,
        tokens: jax.Array,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """tokens (B, T) int. Packed rows: segment_ids 1..k (0 = padding), positions restart per segment."""
        b, t = tokens.shape
        slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))  # (B, T)
        positions = slots if positions is None else positions
        segment_ids = jnp.ones((b, t), jnp.int32) if segment_ids is None else segment_ids
        mask = attention_mask(slots, segment_ids, slots, segment_ids)  # (B, 1, 1, T, T)
        logits, _ = self._forward(tokens, positions, mask, cache=None)
        return logits

    def forward_with_cache(
        self, tokens: jax.Array, *, positions: jax.Array, segment_ids: jax.Array, cache: KVCache
    ) -> tuple[jax.Array, KVCache]:
        """Runs `tokens` (B, T) at cache slots index..index+T-1; returns (logits (B, T, V), cache)."""
        b, t = tokens.shape
        q_slots = cache.index + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))  # (B, T)
        cache_segments = jax.lax.dynamic_update_slice(
            cache.segment_ids, segment_ids.astype(jnp.int32), (0, cache.index)
        )  # (B, S)
        k_slots = jnp.broadcast_to(jnp.arange(cache.max_length, dtype=jnp.int32), (b, cache.max_length))  # (B, S)
        mask = attention_mask(q_slots, segment_ids, k_slots, cache_segments)  # (B, 1, 1, T, S)
        logits, new_kv = self._forward(tokens, positions, mask, cache=cache)
        new_cache = KVCache(
            keys=tuple(k for k, _ in new_kv),
            values=tuple(v for _, v in new_kv),
            segment_ids=cache_segments,
            index=cache.index + t,
        )
        return logits, new_cache

    def _forward(self, tokens, positions, mask, cache: KVCache | None):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = self.model.embed_tokens(tokens)  # (B, T, E)
        x = axes.constrain(x, (axes.BATCH, axes.LENGTH, axes.EMBED))
        inv_freq = inverse_frequencies(cfg.resolved_head_dim, cfg.rope_theta, cfg.rope_scaling)  # (D/2,)
        cos, sin = rope_tables(positions, inv_freq, dtype)  # (B, T, 1, D)
        new_kv = []
        for i, layer in enumerate(self.model.layers):
            if cache is not None:
                x, kv = layer(x, cos, sin, mask, (cache.keys[i], cache.values[i], cache.index))
                new_kv.append(kv)
            elif cfg.remat:
                x = nnx.remat(_call_layer)(layer, x, cos, sin, mask)
            else:
                x, _ = layer(x, cos, sin, mask)
        x = self.model.norm(x)  # (B, T, E)
        if cfg.tie_word_embeddings:
            table = self.model.embed_tokens.embedding[...].astype(x.dtype)  # (V, E)
            logits = dot_general(x, table, (((2,), (1,)), ((), ())))  # (B, T, V)
        else:
            logits = self.lm_head(x)  # (B, T, V)
        logits = axes.constrain(logits.astype(jnp.float32), (axes.BATCH, axes.LENGTH, axes.VOCAB))
        return logits, new_kv
