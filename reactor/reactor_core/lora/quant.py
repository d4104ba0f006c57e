"""Frozen quantised linears for QLoRA: NF4 with double-quantised scales, or int8.

NF4 (Dettmers et al. 2023, "QLoRA"): each block of `block_size` weights is scaled by its
absolute maximum and every value is replaced by the nearest of 16 levels placed at
quantiles of a standard normal, so normally distributed weights use the levels evenly.
Two 4-bit codes share a byte. With double quantisation the float32 absmax scales are
themselves stored as int8 in blocks of 256 (one float32 scale each, plus their mean).

int8: symmetric per output channel (one float32 scale per column of the kernel).

Quantisation is written in jax.numpy, so `jax.eval_shape` sizes a 7B model without
allocating it; dequantisation runs inside the jitted train step.
"""

from __future__ import annotations

import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

MODES = ("nf4", "int8")
SCALE_BLOCK = 256  # absmax values per second-level scale (double quantisation)


class QuantizedWeight(nnx.Variable):
    """Quantised base-weight storage. Not an nnx.Param: never trained, never in the optimizer."""


@functools.cache
def nf4_levels() -> np.ndarray:
    """The 16 NF4 levels in [-1, 1], ascending, exactly one of them 0.

    8 non-negative and 7 negative normal quantiles (asymmetric so 0 is exact), each side
    taken between probability 0.5 and `offset`, then divided by the largest.
    """
    offset = 0.5 * (1 / 32 + 1 / 30)  # the QLoRA paper's choice: mean of 1-1/(2*15), 1-1/(2*16) tails
    normal = statistics.NormalDist()
    p = 1 - offset
    pos = [normal.inv_cdf(0.5 + (p - 0.5) * i / 8) for i in range(1, 9)]
    neg = [-normal.inv_cdf(0.5 + (p - 0.5) * i / 7) for i in range(1, 8)]
    levels = np.array(sorted(neg + [0.0] + pos), np.float64)
    return (levels / np.abs(levels).max()).astype(np.float32)


def _nf4_index(x: jax.Array) -> jax.Array:
    """Nearest NF4 level index (uint8) of values in [-1, 1]."""
    levels = nf4_levels()
    midpoints = jnp.asarray((levels[1:] + levels[:-1]) / 2)  # (15,)
    # Count of midpoints below x; XLA fuses the compare into the reduction.
    return jnp.sum(x[..., None] > midpoints, axis=-1, dtype=jnp.uint8)


@functools.partial(jax.jit, static_argnames=("block_size", "double_quant"))
def quantize_nf4(w: jax.Array, *, block_size: int = 64, double_quant: bool = True) -> dict[str, jax.Array]:
    """(in, out) float kernel -> NF4 arrays (see `dequantize_nf4`)."""
    n = w.size
    if n % block_size:
        raise ValueError(f"NF4 needs the weight size ({n}) to be a multiple of block_size ({block_size})")
    blocks = w.astype(jnp.float32).reshape(-1, block_size)  # (NB, blk)
    absmax = jnp.max(jnp.abs(blocks), axis=-1)  # (NB,)
    safe = jnp.where(absmax > 0, absmax, 1.0)
    idx = _nf4_index(blocks / safe[:, None]).reshape(-1, 2)  # (N/2, 2)
    out = {"codes": (idx[:, 0] << 4) | idx[:, 1]}  # (N/2,) uint8
    if not double_quant:
        out["absmax"] = absmax
        return out
    nb = absmax.shape[0]
    pad = (-nb) % SCALE_BLOCK
    mean = jnp.mean(absmax)
    centered = jnp.pad(absmax - mean, (0, pad)).reshape(-1, SCALE_BLOCK)  # (NB2, 256)
    scale = jnp.max(jnp.abs(centered), axis=-1) / 127.0  # (NB2,)
    q = jnp.round(centered / jnp.where(scale > 0, scale, 1.0)[:, None])
    out["absmax_q"] = q.astype(jnp.int8).reshape(-1)  # (NB + pad,)
    out["absmax_scale"] = scale.astype(jnp.float32)
    out["absmax_mean"] = mean.astype(jnp.float32)
    return out


def dequantize_nf4(q: dict[str, jax.Array], shape: tuple[int, int], *, block_size: int, dtype) -> jax.Array:
    codes = q["codes"]
    idx = jnp.stack([codes >> 4, codes & 0xF], axis=-1).reshape(-1)  # (N,)
    values = jnp.asarray(nf4_levels())[idx].reshape(-1, block_size)  # (NB, blk)
    if "absmax" in q:
        absmax = q["absmax"]
    else:
        scaled = q["absmax_q"].astype(jnp.float32).reshape(-1, SCALE_BLOCK) * q["absmax_scale"][:, None]
        absmax = scaled.reshape(-1)[: values.shape[0]] + q["absmax_mean"]  # (NB,)
    return (values * absmax[:, None]).reshape(shape).astype(dtype)


@jax.jit
def quantize_int8(w: jax.Array) -> dict[str, jax.Array]:
    """(in, out) kernel -> int8 values and one float32 scale per output column."""
    w = w.astype(jnp.float32)
    scale = jnp.max(jnp.abs(w), axis=0) / 127.0  # (out,)
    q = jnp.round(w / jnp.where(scale > 0, scale, 1.0)[None, :])
    return {"values": q.astype(jnp.int8), "scale": scale}


def dequantize_int8(q: dict[str, jax.Array], dtype) -> jax.Array:
    return (q["values"].astype(jnp.float32) * q["scale"][None, :]).astype(dtype)


def _dequantize(arrays: dict[str, jax.Array], spec: tuple, gate=None) -> jax.Array:
    mode, block_size, shape, dtype = spec
    if gate is not None:  # select the integer arrays through a runtime-true predicate
        big = "codes" if mode == "nf4" else "values"
        arrays = {**arrays, big: jnp.where(gate, arrays[big], jnp.zeros_like(arrays[big]))}
    if mode == "nf4":
        return dequantize_nf4(arrays, shape, block_size=block_size, dtype=dtype)
    return dequantize_int8(arrays, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def quantized_matmul(x: jax.Array, arrays: dict[str, jax.Array], spec: tuple) -> jax.Array:
    """x @ dequantize(arrays); spec = (mode, block_size, (in, out), dtype).

    The backward pass dequantises again instead of keeping the dense kernel alive from
    the forward pass: autodiff would otherwise save every layer's float kernel for the
    backward, i.e. a dense copy of the base, which is what QLoRA exists to avoid.
    """
    return _matmul_when_ready(x, arrays, spec, transpose=False)


def _matmul_when_ready(x, arrays, spec, *, transpose: bool):
    # A predicate that is true for every value of x (NaN included) but only known at run
    # time makes this dequantisation depend on the activation: it cannot be hoisted, and
    # the forward and backward copies are different expressions, so CSE cannot merge them
    # into one dense kernel kept alive from the forward to the backward pass. (XLA:CPU
    # removes optimization barriers before CSE, so a barrier would not do this.)
    x0 = x.reshape(-1)[0]
    gate = (x0 == x0) | (x0 != x0)
    w = _dequantize(arrays, spec, gate=gate)  # (in, out)
    return jnp.dot(x, w.T if transpose else w)


def _quantized_matmul_fwd(x, arrays, spec):
    return _matmul_when_ready(x, arrays, spec, transpose=False), arrays


def _quantized_matmul_bwd(spec, arrays, g):
    dx = _matmul_when_ready(g, arrays, spec, transpose=True)  # (..., in)
    return dx, None  # the frozen quantised weights get no gradient


quantized_matmul.defvjp(_quantized_matmul_fwd, _quantized_matmul_bwd)


class QuantizedLinear(nnx.Module):
    """A bias-free linear with a frozen quantised kernel (in, out), dequantised per call."""

    def __init__(self, kernel: jax.Array, *, mode: str, block_size: int = 64, double_quant: bool = True, dtype=None):
        if mode not in MODES:
            raise ValueError(f"quantization mode must be one of {MODES}, got {mode!r}")
        self.in_features, self.out_features = kernel.shape
        self.mode = mode
        self.block_size = block_size
        self.dtype = jnp.dtype(dtype or kernel.dtype)
        if mode == "nf4":
            arrays = quantize_nf4(kernel, block_size=block_size, double_quant=double_quant)
        else:
            arrays = quantize_int8(kernel)
        self.q = nnx.Dict({name: QuantizedWeight(value) for name, value in arrays.items()})

    @classmethod
    def from_linear(cls, linear: nnx.Linear, *, mode: str, block_size: int = 64, double_quant: bool = True):
        if linear.use_bias:
            raise ValueError("QuantizedLinear supports bias-free linears only (Llama has no biases)")
        kernel = linear.kernel.get_value()
        return cls(kernel, mode=mode, block_size=block_size, double_quant=double_quant, dtype=linear.dtype)

    def _spec(self, dtype) -> tuple:
        return (self.mode, self.block_size, (self.in_features, self.out_features), jnp.dtype(dtype))

    def _arrays(self) -> dict[str, jax.Array]:
        return {name: v.get_value() for name, v in self.q.items()}

    def dequantize(self, dtype=None) -> jax.Array:
        """The (in, out) kernel in `dtype` (default: the compute dtype)."""
        return _dequantize(self._arrays(), self._spec(dtype or self.dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return quantized_matmul(x.astype(self.dtype), self._arrays(), self._spec(self.dtype))  # (..., out)


def bits_per_weight(mode: str, *, block_size: int = 64, double_quant: bool = True) -> float:
    """Storage bits per base weight (for memory estimates and tests)."""
    if mode == "int8":
        return 8.0
    scales = (8 / block_size + 32 / (block_size * SCALE_BLOCK)) if double_quant else 32 / block_size
    return 4.0 + scales
