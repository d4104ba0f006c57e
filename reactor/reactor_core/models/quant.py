"""Weight-only int8/int4 quantization of a loaded model's Linear layers (Prime's "8bit"/"4bit").

`quantize_model(model, bits=8)` swaps every `nnx.Linear` for a `QuantizedLinear` in place
(tree surgery, like LoRA). Weights stay integer in memory, output-major in MLForge's
layout (`mlforge.jax_ops`). Symmetric scales: int8 per output channel (or per group),
int4 per group of `group_size` input rows, two values packed per byte. The embedding
lookup stays in float. A tied LM head (SmolLM2's: a third of its weights) gets its own int8
copy of the table, `model.quantized_head`: decode reads the head's weights every token, so
in float it was half of all the bytes a quantized decode step moved. int8 even in 4-bit
mode, as llama.cpp keeps its output matrix at 8 bits: the head is the most sensitive layer.

On CPUs with AVX-512 VNNI, int8 weights are stored in MLForge's panel layout (16 outputs
interleaved per 64-byte word, rearranged once here), which its decode kernel streams with
one output per SIMD lane; results are bit for bit those of the row layout.

Decode and short prompts (up to KERNEL_MAX_ROWS rows) run MLForge's CPU kernel through
the XLA FFI, which streams the integer weights once per call, with activations quantized
to int8 blocks of 32 and integer dot products (llama.cpp's Q8_0 scheme; definition in
mlforge/qmatmul.h; each activation moves by at most half its block's step). Longer
prefills (compute-bound) dequantize inside the jitted step and run XLA's float dot of x
with q * scale.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mlforge import jax_ops
from reactor_core.models.llama import Llama

# Flattened activation rows up to which QuantizedLinear uses the MLForge kernel rather than
# dequantize + XLA dot. Measured on SmolLM2-135M, 2 shared cores: the kernel wins at 1-8
# rows by 10-40x and still at a 128-token prefill (259 vs 159 prompt tok/s, int8); XLA
# wins at 512 tokens (209 vs 134). Per layer (`bazel run //mlforge:bench -- --gemv`,
# 576x1536) the two meet between 128 and 256 rows (int8 still ahead at 256, int4 not).
KERNEL_MAX_ROWS = 128


# Quantizing at load: one compiled program per weight shape (a Llama has four or five)
# instead of eager op-by-op dispatch; about 3x faster for SmolLM2-135M.
_quantize_weight = jax.jit(jax_ops.quantize_weight, static_argnames=("bits", "group_size"))
_pack_panels = jax.jit(jax_ops.pack_panels)


def uses_panels(bits: int, group: int) -> bool:
    """Whether int8 weights are kept in MLForge's panel layout: on CPUs with AVX-512 VNNI,
    where its decode kernel reads them several times faster than the row layout."""
    return bits == 8 and group % 32 == 0 and jax_ops.panel_native()


class QuantizedWeight(nnx.Variable):
    """Integer weights and their scales: frozen, never a trainable nnx.Param."""


class QuantizedLinear(nnx.Module):
    """A frozen bias-free Linear with int8/int4 weights: `layer(x (..., I)) -> (..., O)`."""

    def __init__(self, kernel: jax.Array, *, bits: int, group_size: int | None, dtype):
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        n_in, n_out = kernel.shape
        group = group_size or n_in
        if n_in % group or (bits == 4 and group % 2):
            raise ValueError(f"group_size {group} must divide the input size {n_in} (and be even for 4 bits)")
        self.bits, self.group, self.dtype = bits, group, dtype
        self.in_features, self.out_features = n_in, n_out
        wq, scales = _quantize_weight(kernel, bits=bits, group_size=group)
        self.panels = uses_panels(bits, group)
        if self.panels:  # (P, I/4, 16, 4) uint8 and (P, I/group, 16) float32
            wq, scales = _pack_panels(wq, scales)
        self.qweight = QuantizedWeight(wq)  # else (O, I) int8 or (O, I/2) uint8
        self.scales = QuantizedWeight(scales)  # else (O, I/group) float32

    def row_layout(self) -> tuple[jax.Array, jax.Array]:
        """(wq, scales) in the row layout, whichever layout is stored."""
        if self.panels:
            return jax_ops.unpack_panels(self.qweight[...], self.scales[...], self.out_features)
        return self.qweight[...], self.scales[...]

    def _dequantized_oi(self) -> jax.Array:
        wq, scales = self.row_layout()
        return jax_ops.dequantize_weight(wq, scales, bits=self.bits, group_size=self.group, dtype=self.dtype)  # (O, I)

    def dequantized(self) -> jax.Array:
        return self._dequantized_oi().T  # (I, O)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        if math.prod(x.shape[:-1]) <= KERNEL_MAX_ROWS and self.panels:
            return jax_ops.qmatmul_panel(
                x, self.qweight[...], self.scales[...], out_features=self.out_features, group_size=self.group
            )
        if math.prod(x.shape[:-1]) <= KERNEL_MAX_ROWS:
            return jax_ops.qmatmul(
                x, self.qweight[...], self.scales[...], bits=self.bits, group_size=self.group, activations="int8"
            )
        w = self._dequantized_oi()  # (O, I)
        return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))  # (..., O)

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
    for llama in [node for _, node in nnx.iter_graph(model) if isinstance(node, Llama)]:
        if llama.config.tie_word_embeddings:
            table = llama.model.embed_tokens.embedding[...]  # (V, E)
            head_group = group_size if bits == 8 else None
            llama.quantized_head = QuantizedLinear(
                table.T, bits=8, group_size=head_group, dtype=jnp.dtype(llama.config.dtype)
            )
    return model
