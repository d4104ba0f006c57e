"""qmatmul with int8 activations (mlforge.qmatmul and jax_ops.qmatmul) against numpy.

The reference is the definition in mlforge/qmatmul.h in float64: x quantized per block
of 32 in float32 (d = max|x| / 127, rint(x / d)), times the integer weights and scales.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlforge
from mlforge import _mlforge, jax_ops

# (kernel, isa cap, vnni): every integer path, forced through the numpy entry point.
PATHS = [("scalar", "scalar", False), ("avx2", "avx2", False), ("avx_vnni", "avx2", True), ("avx512_vnni", "avx512", True)]
# (bits, in, group): int8 per channel and per group; int4 groups of 32, 64 and in.
SHAPES = [(8, 64, 64), (8, 576, 576), (8, 1536, 1536), (8, 576, 32), (8, 576, 96), (4, 64, 32), (4, 576, 64), (4, 576, 32), (4, 1536, 64), (4, 1536, 1536)]
ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 33]


def _weights(n_in, n_out, bits, group, seed=0):
    w = np.random.default_rng(seed).standard_normal((n_in, n_out), dtype=np.float32)
    wq, scales = jax_ops.quantize_weight(w, bits=bits, group_size=group)
    return np.asarray(wq), np.asarray(scales)


def _int8_reference(x, wq, scales, bits, group):
    """(y, sum of |terms|, bound on |y - float path|) in float64."""
    rows, n_in = x.shape
    blocks = x.reshape(rows, n_in // 32, 32)
    d = np.abs(blocks).max(-1, keepdims=True) / np.float32(127)  # float32, as the kernel
    safe = np.where(d > 0, d, np.float32(1))
    xq = np.where(d > 0, np.rint(blocks / safe), 0).astype(np.float64)  # float32 division
    x_hat = (xq * d).reshape(rows, n_in)  # float64 products of the float32 d
    w = np.asarray(jax_ops.dequantize_weight(wq, scales, bits=bits, group_size=group), np.float64)  # (O, I)
    step = np.repeat(d[..., 0].astype(np.float64), 32, axis=1)  # (M, I)
    return x_hat @ w.T, np.abs(x_hat) @ np.abs(w).T, (step / 2) @ np.abs(w).T


@pytest.fixture
def force_path(request):
    kernel, isa, vnni = request.param
    _mlforge.set_max_isa(isa)
    _mlforge.set_vnni(vnni)
    if mlforge.runtime_info()["int8_kernel"] != kernel:
        _mlforge.set_max_isa("avx512")
        _mlforge.set_vnni(True)
        pytest.skip(f"this CPU has no {kernel}")
    yield kernel
    _mlforge.set_max_isa("avx512")
    _mlforge.set_vnni(True)


@pytest.mark.parametrize("force_path", PATHS, indirect=True, ids=[p[0] for p in PATHS])
@pytest.mark.parametrize("bits,n_in,group", SHAPES)
def test_every_path_matches_the_definition_and_the_float_path(force_path, bits, n_in, group):
    wq, scales = _weights(n_in, 37, bits, group)
    for rows in ROWS:
        x = np.random.default_rng(rows).standard_normal((rows, n_in), dtype=np.float32)
        y = mlforge.qmatmul(x, wq, scales, bits=bits, group_size=group)
        want, magnitude, rounding = _int8_reference(x, wq, scales, bits, group)
        assert np.all(np.abs(y - want) <= 1e-5 * magnitude), f"rows={rows}"
        floats = mlforge.qmatmul(x, wq, scales, bits=bits, group_size=group, activations="float")
        assert np.all(np.abs(y - floats) <= 1.001 * rounding + 1e-6), f"rows={rows}"


@pytest.mark.parametrize("bits,n_in,group", SHAPES)
def test_ffi_target_runs_the_same_kernel_under_jit(bits, n_in, group):
    wq, scales = _weights(n_in, 21, bits, group, seed=1)
    x = np.random.default_rng(2).standard_normal((2, 3, n_in), dtype=np.float32)
    f = jax.jit(lambda x, wq, s: jax_ops.qmatmul(x, wq, s, bits=bits, group_size=group))
    assert "mlforge_qmatmul_q8" in f.lower(x, wq, scales).as_text()
    y = np.asarray(f(x, wq, scales))  # (2, 3, 21)
    np.testing.assert_array_equal(
        y.reshape(6, 21), mlforge.qmatmul(x.reshape(6, n_in), wq, scales, bits=bits, group_size=group)
    )
    want, magnitude, _ = _int8_reference(x.reshape(6, n_in), wq, scales, bits, group)
    assert np.all(np.abs(y.reshape(6, 21) - want) <= 1e-5 * magnitude)


def test_groups_without_whole_blocks_run_the_float_path():
    for bits, group in [(8, 16), (4, 96), (4, 6)]:
        wq, scales = _weights(192, 9, bits, group)
        x = np.random.default_rng(0).standard_normal((3, 192), dtype=np.float32)
        y = np.asarray(jax_ops.qmatmul(x, wq, scales, bits=bits, group_size=group))
        floats = jax_ops.qmatmul(x, wq, scales, bits=bits, group_size=group, activations="float")
        np.testing.assert_array_equal(y, np.asarray(floats))


def test_gradient_is_the_float_one():
    wq, scales = _weights(64, 24, 4, 32)
    w = np.asarray(jax_ops.dequantize_weight(wq, scales, bits=4, group_size=32))  # (O, I)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 64), dtype=np.float32))
    g = jax.grad(lambda x: jax_ops.qmatmul(x, wq, scales, bits=4, group_size=32).sum())(x)
    np.testing.assert_allclose(np.asarray(g), np.broadcast_to(w.sum(0), (2, 64)), rtol=1e-5, atol=1e-5)


def test_bad_activations_raise_value_error():
    wq, scales = _weights(64, 8, 8, 32)
    with pytest.raises(ValueError, match="activations must be"):
        jax_ops.qmatmul(jnp.ones((1, 64)), wq, scales, bits=8, group_size=32, activations="int4")
    with pytest.raises(ValueError, match="activations must be"):
        mlforge.qmatmul(np.ones((1, 64), np.float32), wq, scales, bits=8, group_size=32, activations="bf16")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
