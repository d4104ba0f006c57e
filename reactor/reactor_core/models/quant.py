"""Weight-only int8/int4 quantization of a loaded model's Linear layers (Prime's "8bit"/"4bit").

`quantize_model(model, bits=8)` swaps every `nnx.Linear` for a `QuantizedLinear` in place
(tree surgery, like LoRA). Weights stay integer in memory and are dequantized inside the
jitted step, right before each matmul. Symmetric scales: int8 per output channel (or per
group), int4 per group of `group_size` input rows, two values packed per byte. The
embedding (and, when tied, the LM head that shares it) stays in float.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class QuantizedWeight(nnx.Variable):
    """Integer weights and their scales: frozen, never a trainable nnx.Param."""


class QuantizedLinear(nnx.Module):
    def __init__(self, kernel: jax.Array, *, bits: int, group_size: int | None, dtype):
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        n_in, n_out = kernel.shape
        group = group_size or n_in
        if n_in % group or (bits == 4 and group % 2):
            raise ValueError(f"group_size {group} must divide the input size {n_in} (and be even for 4 bits)")
        self.bits, self.group, self.dtype = bits, group, dtype
        self.in_features, self.out_features = n_in, n_out
        w = kernel.astype(jnp.float32).reshape(n_in // group, group, n_out)  # (G, g, O)
        qmax = 127.0 if bits == 8 else 7.0
        scale = jnp.max(jnp.abs(w), axis=1, keepdims=True) / qmax  # (G, 1, O)
        scale = jnp.where(scale == 0, 1.0, scale)
        q = jnp.clip(jnp.round(w / scale), -qmax - 1, qmax).astype(jnp.int8)  # (G, g, O)
        if bits == 4:
            nibbles = (q + 8).astype(jnp.uint8).reshape(n_in // group, group // 2, 2, n_out)
            q = nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)  # (G, g/2, O) uint8
        self.qweight = QuantizedWeight(q)
        self.scales = QuantizedWeight(scale.astype(jnp.float32))

    def dequantized(self) -> jax.Array:
        q = self.qweight[...]
        if self.bits == 4:
            lo = (q & 0xF).astype(jnp.int8) - 8
            hi = (q >> 4).astype(jnp.int8) - 8
            q = jnp.stack([lo, hi], axis=2).reshape(q.shape[0], self.group, self.out_features)  # (G, g, O)
        w = q.astype(self.dtype) * self.scales[...].astype(self.dtype)  # (G, g, O)
        return w.reshape(self.in_features, self.out_features)  # (I, O)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(self.dtype), self.dequantized())  # (..., O)

    def nbytes(self) -> int:
        return self.qweight[...].nbytes + self.scales[...].nbytes


def quantize_model(model: nnx.Module, *, bits: int = 8, group_size: int | None = None) -> nnx.Module:
    """Replaces each nnx.Linear in `model` by a QuantizedLinear; returns the same model.

    group_size None: int8 per output channel, int4 groups of 64.
    """
    if bits == 4 and group_size is None:
        group_size = 64
    for _, node in list(nnx.iter_graph(model)):
        if not isinstance(node, nnx.Module):
            continue
        for name, child in list(vars(node).items()):
            if isinstance(child, nnx.Linear):
                if child.bias is not None:
                    raise ValueError(f"quantize_model: Linear {name!r} has a bias; not supported")
                dtype = child.dtype or jnp.float32
                setattr(node, name, QuantizedLinear(child.kernel[...], bits=bits, group_size=group_size, dtype=dtype))
    return model
