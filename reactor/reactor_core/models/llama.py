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
from reactor_core.models.slot_cache import SlotCache
from reactor_core.models.rope import inverse_frequencies, rope_tables

# Prompts longer than this run prefill attention in query blocks of this many slots
# (`blocked_attention`; every prompt bucket past it is a multiple).
PREFILL_QUERY_BLOCK = 128


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

    def __call__(self, x, cos, sin, mask, cache=None, query_block=0, segment_ids=None):
        attn, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, query_block, segment_ids)
        x = x + attn  # (B, T, E)
        x = x + self.mlp(self.post_attention_layernorm(x))  # (B, T, E)
        return axes.constrain(x, (axes.BATCH, axes.LENGTH, axes.EMBED)), new_kv


def _call_layer(layer, x, cos, sin, mask, segment_ids):
    return layer(x, cos, sin, mask, segment_ids=segment_ids)[0]


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
        x, _ = self._forward(tokens, positions, mask, cache=None, segment_ids=segment_ids)
        return self._logits(x)

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
        x, new_kv = self._forward(tokens, positions, mask, cache=cache)
        logits = self._logits(x)
        new_cache = KVCache(
            keys=tuple(k for k, _ in new_kv),
            values=tuple(v for _, v in new_kv),
            segment_ids=cache_segments,
            index=cache.index + t,
        )
        return logits, new_cache

    def prefill(
        self, tokens: jax.Array, *, positions: jax.Array, segment_ids: jax.Array, max_length: int
    ) -> tuple[jax.Array, KVCache]:
        """Reads a prompt (B, T) into a new cache of `max_length` slots; returns (logits (B, V), cache).

        Generation's first step, made cheap: attention spans the T prompt slots only, not the whole
        cache (in query blocks past PREFILL_QUERY_BLOCK), and the LM head runs on the last slot only,
        the one sampling reads (left padding puts every row's last token there). Equals
        `forward_with_cache` on an empty cache at that slot.
        """
        b, t = tokens.shape
        if max_length < t:
            raise ValueError(f"max_length={max_length} must hold the {t}-token prompt")
        slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))  # (B, T)
        mask = attention_mask(slots, segment_ids, slots, segment_ids)  # (B, 1, 1, T, T)
        x, new_kv = self._forward(tokens, positions, mask, cache=None, prefill=True)
        logits = self._logits(x[:, -1:])[:, 0]  # (B, V)
        cache = KVCache.from_prompt(new_kv, segment_ids, max_length, jnp.dtype(self.config.dtype))
        return logits, cache

    def forward_slots(
        self, tokens: jax.Array, *, positions: jax.Array, slots: jax.Array, last: jax.Array, cache: SlotCache
    ) -> tuple[jax.Array, SlotCache]:
        """The generation engine's one step: a prefill chunk (B=1, T=chunk) or a decode batch (B, T=1).

        tokens/positions (B, T) with positions < 0 for padding; row b lives in cache row slots[b]
        (see `slot_cache`). Returns the float32 logits (B, V) of token last[b] of each row (the
        LM head runs on that one token only) and the updated cache.
        """
        cfg = self.config
        x = self.model.embed_tokens(tokens)  # (B, T, E)
        inv_freq = inverse_frequencies(cfg.resolved_head_dim, cfg.rope_theta, cfg.rope_scaling)  # (D/2,)
        cos, sin = rope_tables(jnp.maximum(positions, 0), inv_freq, jnp.dtype(cfg.dtype))  # (B, T, 1, D)
        keys, values = [], []
        for i, layer in enumerate(self.model.layers):
            h, k, v = layer.self_attn.forward_slots(
                layer.input_layernorm(x), cos, sin, cache.keys[i], cache.values[i], slots, positions
            )
            x = x + h  # (B, T, E)
            x = x + layer.mlp(layer.post_attention_layernorm(x))  # (B, T, E)
            keys.append(k)
            values.append(v)
        picked = jnp.take_along_axis(x, last[:, None, None], axis=1)  # (B, 1, E)
        return self._logits(picked)[:, 0], SlotCache(keys=tuple(keys), values=tuple(values))

    def _forward(self, tokens, positions, mask, cache: KVCache | None, prefill: bool = False, segment_ids=None):
        """Embedding and decoder layers -> (hidden (B, T, E) before the final norm, per-layer keys/values).

        Keys/values come back with a cache (the updated cache arrays) or with prefill (this call's
        own; long prompts attend in query blocks). segment_ids (plain forward only) lets attention
        use the fused CPU kernel (attention.kernel_enabled).
        """
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
            elif prefill:
                blocked = tokens.shape[1] > PREFILL_QUERY_BLOCK and tokens.shape[1] % PREFILL_QUERY_BLOCK == 0
                x, kv = layer(x, cos, sin, mask, query_block=PREFILL_QUERY_BLOCK if blocked else 0)
                new_kv.append(kv)
            elif cfg.remat:
                x = nnx.remat(_call_layer)(layer, x, cos, sin, mask, segment_ids)
            else:
                x, _ = layer(x, cos, sin, mask, segment_ids=segment_ids)
        return x, new_kv

    def _logits(self, x: jax.Array) -> jax.Array:
        """Final norm and LM head: hidden (B, T, E) -> float32 logits (B, T, V)."""
        cfg = self.config
        x = self.model.norm(x)  # (B, T, E)
        quantized_head = getattr(self, "quantized_head", None)  # set by quant.quantize_model
        if quantized_head is not None:
            logits = quantized_head(x)  # (B, T, V)
        elif cfg.tie_word_embeddings:
            table = self.model.embed_tokens.embedding[...].astype(x.dtype)  # (V, E)
            logits = dot_general(x, table, (((2,), (1,)), ((), ())))  # (B, T, V)
        else:
            logits = self.lm_head(x)  # (B, T, V)
        return axes.constrain(logits.astype(jnp.float32), (axes.BATCH, axes.LENGTH, axes.VOCAB))
