"""A static-shape KV cache for incremental decoding.

Every row of the batch writes at the same slot `index`; rows that are shorter (left
padding) mark their unused slots with segment id 0 so attention skips them. Shapes never
change while decoding, so one compiled step serves a whole generation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reactor_core.models.config import LlamaConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    keys: tuple[jax.Array, ...]  # per layer (B, S, KVH, D)
    values: tuple[jax.Array, ...]  # per layer (B, S, KVH, D)
    segment_ids: jax.Array  # (B, S) int32; 0 = empty slot or padding
    index: jax.Array  # () int32; next slot to write

    @classmethod
    def init(cls, config: LlamaConfig, batch: int, max_length: int, dtype=None) -> KVCache:
        dtype = dtype or jnp.dtype(config.dtype)
        shape = (batch, max_length, config.num_kv_heads, config.resolved_head_dim)
        return cls(
            keys=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
            values=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
            segment_ids=jnp.zeros((batch, max_length), jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )

    @classmethod
    def from_prompt(
        cls, kv: list[tuple[jax.Array, jax.Array]], segment_ids: jax.Array, max_length: int, dtype
    ) -> KVCache:
        """A cache holding a prompt's per-layer (keys, values) (B, T, KVH, D) in slots 0..T-1, index T."""
        t = segment_ids.shape[1]
        pad = ((0, 0), (0, max_length - t), (0, 0), (0, 0))
        return cls(
            keys=tuple(jnp.pad(k.astype(dtype), pad) for k, _ in kv),
            values=tuple(jnp.pad(v.astype(dtype), pad) for _, v in kv),
            segment_ids=jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, max_length - t))),  # (B, S)
            index=jnp.asarray(t, jnp.int32),
        )

    @property
    def max_length(self) -> int:
        return self.segment_ids.shape[1]

    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.keys + self.values)


def write(cache_kv: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """Writes `new` (B, T, KVH, D) into `cache_kv` (B, S, KVH, D) starting at slot `index`."""
    return jax.lax.dynamic_update_slice(cache_kv, new.astype(cache_kv.dtype), (0, index, 0, 0))
