"""MLForge: native kernels for quantization and sequence packing.

The only module Python code imports; `_mlforge` (C++ via pybind11) stays private.

    import mlforge
    wq, scales, biases = mlforge.quantize(w, group_size=64, bits=4)   # == mlx.core.quantize
    w_hat = mlforge.dequantize(wq, scales, biases, group_size=64, bits=4)
    blocks = mlforge.gguf_quantize(x, "Q8_0")                          # == gguf.quants.quantize
    x_hat = mlforge.gguf_dequantize(blocks, "Q8_0", x.shape)
    packed = mlforge.pack(tokens, lengths, seq_len=2048)                # -> PackResult
    y = mlforge.qmatmul(x, wq, scales, bits=4, group_size=64)           # int8 x, int4/int8 W

Inside jitted JAX code use `mlforge.jax_ops` (XLA FFI) instead; importing mlforge does
not import jax.

Bad arguments raise ValueError naming the argument. Kernels release the GIL and use
all cores for large inputs (env MLFORGE_NUM_THREADS caps the threads).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import numpy as np

from mlforge import _mlforge

__all__ = [
    "PackResult",
    "dequantize",
    "gguf_dequantize",
    "gguf_quantize",
    "pack",
    "qmatmul",
    "quantize",
    "runtime_info",
]


def _int_arg(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int; got {value!r}")  # noqa: TRY004 (API: ValueError)
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int; got {value!r}") from None


def _array(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. an mlx bfloat16 array
        raise ValueError(f"{name} could not be read as a numpy array: {e}") from None


def quantize(
    w: Any, group_size: int = 64, bits: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine group-wise quantization, bit-identical to `mlx.core.quantize(w, group_size, bits)`.

    w: (rows, cols) float32 or float16, cols divisible by group_size (32, 64 or 128);
    bits in {2, 3, 4, 5, 6, 8}. Returns (wq uint32 (rows, cols * bits / 32), scales,
    biases (rows, cols / group_size)) with scales/biases in w's dtype, as MLX does.
    """
    w = _array(w, "w")
    group_size, bits = _int_arg(group_size, "group_size"), _int_arg(bits, "bits")
    if w.dtype == np.float16:
        # MLX computes float16 groups in float32 and rounds only the stored scale/bias.
        wq, scales, biases = _mlforge.affine_quantize(w.astype(np.float32), group_size, bits)
        return wq, scales.astype(np.float16), biases.astype(np.float16)
    return _mlforge.affine_quantize(w, group_size, bits)


def dequantize(
    wq: Any, scales: Any, biases: Any, group_size: int = 64, bits: int = 4
) -> np.ndarray:
    """Inverse of `quantize`, bit-identical to `mlx.core.dequantize`: scale * q + bias.

    Returns (rows, cols) in the scales' dtype (float32, or float16 with MLX's float16
    arithmetic).
    """
    wq, scales, biases = _array(wq, "wq"), _array(scales, "scales"), _array(biases, "biases")
    group_size, bits = _int_arg(group_size, "group_size"), _int_arg(bits, "bits")
    if scales.dtype == np.float16:
        if biases.dtype != np.float16:
            raise ValueError(f"biases must have the dtype of scales (float16); got {biases.dtype}")
        out = _mlforge.affine_dequantize(
            wq, scales.astype(np.float32), biases.astype(np.float32), group_size, bits, True
        )
        return out.astype(np.float16)  # exact: every value is already a float16
    return _mlforge.affine_dequantize(wq, scales, biases, group_size, bits, False)


def gguf_quantize(x: Any, qtype: str | int) -> np.ndarray:
    """GGUF block quantization, byte-equal to `gguf.quants.quantize(x, qtype)`.

    qtype: "Q8_0", "Q4_0", "Q4_1" or a `gguf.GGMLQuantizationType` (or its int value).
    x: float array whose last dimension is a multiple of 32. Returns uint8 blocks shaped
    (*x.shape[:-1], x.shape[-1] // 32 * bytes_per_block).
    """
    return _mlforge.gguf_quantize(_array(x, "x"), qtype)


def gguf_dequantize(data: Any, qtype: str | int, shape: Any = None) -> np.ndarray:
    """Decodes GGUF blocks to float32, equal to `gguf.quants.dequantize(data, qtype)`.

    data: uint8 blocks (last dimension a multiple of the block bytes). shape: the output
    shape (defaults to data's shape with the last dimension in values, as gguf does).
    """
    if shape is not None:
        shape = tuple(_int_arg(d, "shape") for d in shape)
    return _mlforge.gguf_dequantize(_array(data, "data"), qtype, shape)


@dataclasses.dataclass(frozen=True, eq=False)
class PackResult:
    """Packed training rows; R rows of seq_len tokens.

    tokens, segment_ids, positions: (R, seq_len) int32; loss_mask: (R, seq_len) uint8;
    placement: (N, 2) int64 (row, offset) of each input sequence, in input order.
    Segment ids number a row's sequences 1..k; padding has segment 0, position 0,
    loss_mask 0 and token pad_id.
    """

    tokens: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    loss_mask: np.ndarray
    placement: np.ndarray
    num_truncated: int
    padding_fraction: float

    @property
    def num_rows(self) -> int:
        return self.tokens.shape[0]


def pack(
    tokens: Any,
    lengths: Any,
    seq_len: int,
    *,
    loss_mask: Any = None,
    truncate: bool = False,
    pad_id: int = 0,
) -> PackResult:
    """Packs whole sequences into rows of seq_len by best-fit-decreasing.

    tokens: flat int32 (any integer dtype that fits) array of all sequences concatenated;
    lengths: 1-D integers with sum(lengths) == len(tokens); loss_mask: optional flat
    bool/integer array like tokens. Sequences are never split: one longer than seq_len
    raises ValueError unless truncate=True, which keeps its first seq_len tokens and
    counts it in num_truncated. Deterministic; equal lengths keep input order.
    """
    seq_len = _int_arg(seq_len, "seq_len")
    pad_id = _int_arg(pad_id, "pad_id")
    if not -(2**31) <= pad_id < 2**31:
        raise ValueError(f"pad_id must fit in int32; got {pad_id}")
    if not 1 <= seq_len < 2**31:
        raise ValueError(f"seq_len must be in [1, 2**31 - 1]; got {seq_len}")
    mask = None if loss_mask is None else _array(loss_mask, "loss_mask")
    out = _mlforge.pack(
        _array(tokens, "tokens"), _array(lengths, "lengths"), seq_len, mask, bool(truncate), pad_id
    )
    return PackResult(*out)


def qmatmul(
    x: Any, wq: Any, scales: Any, *, bits: int, group_size: int, activations: str = "int8"
) -> np.ndarray:
    """y (M, O) = x (M, I) @ W.T for weight-only quantized W (layout: mlforge/qmatmul.h).

    x float32 (M, I); wq int8 (O, I) for bits=8 or uint8 (O, I / 2) for bits=4;
    scales float32 (O, I / group_size). W[o, i] = q[o, i] * scales[o, i // group_size].
    Meant for few rows (decode); `mlforge.jax_ops.quantize_weight` makes wq and scales.
    activations "int8" (default): x is first quantized per block of 32 inputs and the dots
    run on integers (llama.cpp's Q8_0 scheme; definition in mlforge/qmatmul.h), for groups
    that hold whole blocks (int8: group_size % 32 == 0; int4: 32 or a multiple of 64);
    "float", or any other group size: float dots of x with q * scale.
    """
    x, wq, scales = _array(x, "x"), _array(wq, "wq"), _array(scales, "scales")
    bits, group_size = _int_arg(bits, "bits"), _int_arg(group_size, "group_size")
    return _mlforge.qmatmul(x, wq, scales, bits, group_size, activations)


def runtime_info() -> dict[str, Any]:
    """The SIMD level in use ("avx512", "avx2" or "scalar"), the detected one, threads, and
    the int8-activation qmatmul kernel ("avx512_vnni", "avx_vnni", "avx2" or "scalar")."""
    return dict(_mlforge.runtime_info())
