"""The panel layout (jax_ops.pack_panels + qmatmul_panel) against the row layout and numpy.

Bit for bit equal to jax_ops.qmatmul's int8 default where the CPU has AVX-512 VNNI (the
kernels share every integer and float step); the portable loop elsewhere is checked
against the float64 definition.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlforge import _mlforge, jax_ops

SHAPES = [(64, 40, 64), (576, 576, 576), (576, 192, 32), (1536, 576, 1536), (576, 1000, 96)]  # (in, out, group)


def _weights(n_in, n_out, group, seed=0):
    w = np.random.default_rng(seed).standard_normal((n_in, n_out), dtype=np.float32)
    return jax_ops.quantize_weight(w, bits=8, group_size=group)


@pytest.mark.parametrize("n_in,n_out,group", SHAPES)
def test_unpack_inverts_pack(n_in, n_out, group):
    wq, scales = _weights(n_in, n_out, group)
    panels, panel_scales = jax_ops.pack_panels(wq, scales)
    assert panels.dtype == jnp.uint8 and panels.shape == (-(-n_out // 16), n_in // 4, 16, 4)
    back_q, back_s = jax_ops.unpack_panels(panels, panel_scales, n_out)
    np.testing.assert_array_equal(back_q, wq)
    np.testing.assert_array_equal(back_s, scales)
    # Word 1 of panel 0 holds inputs 4..7 of outputs 0..15, offset by 128.
    np.testing.assert_array_equal(np.asarray(panels[0, 1]).astype(int) - 128, np.asarray(wq)[:16, 4:8])


@pytest.mark.parametrize("rows", [1, 3, 16, 64])
@pytest.mark.parametrize("n_in,n_out,group", SHAPES)
def test_panel_equals_row_layout(rows, n_in, n_out, group):
    wq, scales = _weights(n_in, n_out, group, seed=rows)
    panels, panel_scales = jax_ops.pack_panels(wq, scales)
    x = jnp.asarray(np.random.default_rng(rows + 1).standard_normal((rows, n_in), dtype=np.float32))
    got = jax.jit(lambda x: jax_ops.qmatmul_panel(x, panels, panel_scales, out_features=n_out, group_size=group))(x)
    want = jax_ops.qmatmul(x, wq, scales, bits=8, group_size=group)
    assert got.shape == (rows, n_out)
    if jax_ops.panel_native():
        np.testing.assert_array_equal(got, want)
    # Both against the float path: at most half an activation step per input apart.
    floats = np.asarray(x, np.float64) @ np.asarray(jax_ops.dequantize_weight(wq, scales, bits=8, group_size=group), np.float64).T
    step = np.abs(np.asarray(x)).reshape(rows, n_in // 32, 32).max(-1) / 127
    bound = (np.repeat(step, 32, axis=1) / 2) @ np.abs(np.asarray(jax_ops.dequantize_weight(wq, scales, bits=8, group_size=group))).T
    assert np.all(np.abs(np.asarray(got, np.float64) - floats) <= 1.001 * bound + 1e-5)


def test_portable_loop_equals_the_simd_kernel():
    wq, scales = _weights(576, 50, 64)
    panels, panel_scales = jax_ops.pack_panels(wq, scales)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((5, 576), dtype=np.float32))

    def run():
        return np.asarray(jax_ops.qmatmul_panel(x, panels, panel_scales, out_features=50, group_size=64))

    simd = run()
    _mlforge.set_vnni(False)
    try:
        portable = run()
    finally:
        _mlforge.set_vnni(True)
    np.testing.assert_array_equal(portable, simd)


def test_leading_dims_and_gradient():
    wq, scales = _weights(64, 40, 64)
    panels, panel_scales = jax_ops.pack_panels(wq, scales)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 3, 64), dtype=np.float32))

    def f(x):
        return jax_ops.qmatmul_panel(x, panels, panel_scales, out_features=40, group_size=64)

    assert f(x).shape == (2, 3, 40)
    w = jax_ops.dequantize_weight(wq, scales, bits=8, group_size=64)  # (O, I)
    dx = jax.grad(lambda x: f(x).sum())(x)
    np.testing.assert_allclose(dx, jnp.broadcast_to(w.sum(0), x.shape), rtol=1e-5, atol=1e-6)


def test_bad_arguments_name_what_is_wrong():
    wq, scales = _weights(64, 40, 64)
    panels, panel_scales = jax_ops.pack_panels(wq, scales)
    x = jnp.zeros((1, 64), jnp.float32)
    with pytest.raises(ValueError, match="wq must be int8"):
        jax_ops.pack_panels(wq.astype(jnp.int32), scales)
    with pytest.raises(ValueError, match="multiple of 32"):
        jax_ops.pack_panels(*jax_ops.quantize_weight(np.ones((64, 8), np.float32), bits=8, group_size=16))
    with pytest.raises(ValueError, match="panels must be uint8"):
        jax_ops.qmatmul_panel(jnp.zeros((1, 32), jnp.float32), panels, panel_scales, out_features=40, group_size=32)
    with pytest.raises(ValueError, match="out_features 10 does not fit"):
        jax_ops.qmatmul_panel(x, panels, panel_scales, out_features=10, group_size=64)
    with pytest.raises(ValueError, match="panel_scales must be"):
        jax_ops.qmatmul_panel(x, panels, panel_scales[:, :, :8], out_features=40, group_size=64)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
