"""RMSNorm as in Llama: normalize in float32, scale in the compute dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from reactor_core.models import axes


class RMSNorm(nnx.Module):
    def __init__(self, features: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs):
        del rngs  # deterministic init; kept for a uniform constructor signature
        self.eps = eps
        self.dtype = dtype
        self.weight = nnx.Param(jnp.ones((features,), param_dtype), out_sharding=(axes.EMBED,), eager_sharding=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(x32 * x32, axis=-1, keepdims=True)  # (..., 1)
        normed = (x32 * jax.lax.rsqrt(variance + self.eps)).astype(self.dtype)
        return self.weight[...].astype(self.dtype) * normed
