"""mlforge.jax_ops (XLA FFI) and mlforge.qmatmul against a float64 dequantized reference."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlforge
from mlforge import jax_ops

N_IN = 192
# (bits, group_size): int8 per channel and per group; int4 groups the SIMD paths take, and 6.
CASES = [(8, N_IN), (8, 32), (8, 16), (4, 64), (4, 32), (4, 6)]


def _weights(n_in: int, n_out: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_in, n_out), dtype=np.float32)


def _reference(x: np.ndarray, wq, scales, bits: int, group_size: int) -> np.ndarray:
    """x (..., I) @ W.T in float64, W = the float32 dequantized weight (O, I)."""
    w = np.asarray(jax_ops.dequantize_weight(wq, scales, bits=bits, group_size=group_size))
    return x.astype(np.float64) @ w.T.astype(np.float64)


def _tolerance(x: np.ndarray, scales) -> float:
    # Float32 sums in another order: a few ulps of sum |x| * |w|.
    return 4e-7 * float(np.abs(x).max()) * float(np.max(scales)) * 128 * x.shape[-1]


@pytest.mark.parametrize("bits,group_size", CASES)
def test_quantize_round_trip_is_within_half_a_step(bits, group_size):
    w = _weights(N_IN, 40)
    wq, scales = jax_ops.quantize_weight(w, bits=bits, group_size=group_size)
    assert wq.shape == ((40, N_IN) if bits == 8 else (40, N_IN // 2))
    assert wq.dtype == (jnp.int8 if bits == 8 else jnp.uint8)
    assert scales.shape == (40, N_IN // group_size)
    w_hat = np.asarray(
        jax_ops.dequantize_weight(wq, scales, bits=bits, group_size=group_size)
    )  # (O, I)
    step = np.repeat(np.asarray(scales), group_size, axis=1)  # (O, I)
    assert np.all(np.abs(w_hat - w.T) <= step / 2 + 1e-6)


def test_int4_layout_holds_halves_of_each_group():
    # One output, group of 4: byte 0 = inputs 0 (low) and 2 (high), byte 1 = inputs 1 and 3.
    wq = jnp.asarray([[0x90, 0x5F]], jnp.uint8)
    scales = jnp.asarray([[0.5]], jnp.float32)
    w = jax_ops.dequantize_weight(wq, scales, bits=4, group_size=4)
    np.testing.assert_array_equal(np.asarray(w), [[-4.0, 3.5, 0.5, -1.5]])
    y = jax_ops.qmatmul(jnp.asarray([[1.0, 2.0, 3.0, 4.0]]), wq, scales, bits=4, group_size=4)
    np.testing.assert_allclose(np.asarray(y), [[-4.0 + 7.0 + 1.5 - 6.0]])


@pytest.mark.parametrize("bits,group_size", CASES)
@pytest.mark.parametrize("lead", [(1,), (5,), (2, 3), (1, 1, 8)])
def test_qmatmul_matches_dequantized_reference_under_jit(bits, group_size, lead):
    wq, scales = jax_ops.quantize_weight(_weights(N_IN, 37), bits=bits, group_size=group_size)
    x = np.random.default_rng(1).standard_normal((*lead, N_IN), dtype=np.float32)
    f = jax.jit(
        lambda x, wq, s: jax_ops.qmatmul(x, wq, s, bits=bits, group_size=group_size, activations="float")
    )
    y = np.asarray(f(x, wq, scales))
    assert y.shape == (*lead, 37) and y.dtype == np.float32
    np.testing.assert_allclose(
        y, _reference(x, wq, scales, bits, group_size), rtol=0, atol=_tolerance(x, scales)
    )
    # The numpy entry point runs the same kernel: same bits.
    np.testing.assert_array_equal(
        mlforge.qmatmul(
            x.reshape(-1, N_IN),
            np.asarray(wq),
            np.asarray(scales),
            bits=bits,
            group_size=group_size,
            activations="float",
        ),
        y.reshape(-1, 37),
    )


def test_jit_lowers_to_the_ffi_custom_call():
    wq, scales = jax_ops.quantize_weight(_weights(64, 16), bits=4, group_size=32)
    f = jax.jit(lambda x: jax_ops.qmatmul(x, wq, scales, bits=4, group_size=32))
    assert "mlforge_qmatmul" in f.lower(jnp.ones((1, 64))).as_text()


def test_bfloat16_input_gives_bfloat16_output():
    wq, scales = jax_ops.quantize_weight(_weights(64, 24), bits=8, group_size=64)
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    y = jax_ops.qmatmul(jnp.asarray(x, jnp.bfloat16), wq, scales, bits=8, group_size=64)
    assert y.dtype == jnp.bfloat16
    x_bf16 = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    ref = _reference(x_bf16, wq, scales, 8, 64)
    np.testing.assert_allclose(
        np.asarray(y, np.float32), ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max()
    )


def test_grad_and_vmap():
    wq, scales = jax_ops.quantize_weight(_weights(64, 24), bits=4, group_size=32)
    w = np.asarray(jax_ops.dequantize_weight(wq, scales, bits=4, group_size=32))  # (O, I)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 64), dtype=np.float32))
    g = jax.jit(jax.grad(lambda x: jax_ops.qmatmul(x, wq, scales, bits=4, group_size=32).sum()))(x)
    np.testing.assert_allclose(
        np.asarray(g), np.broadcast_to(w.sum(0), (2, 64)), rtol=1e-5, atol=1e-5
    )
    batched = jax.vmap(lambda r: jax_ops.qmatmul(r, wq, scales, bits=4, group_size=32, activations="float"))(x)
    np.testing.assert_allclose(np.asarray(batched), x @ w.T, rtol=1e-5, atol=1e-4)


def test_empty_rows():
    wq, scales = jax_ops.quantize_weight(_weights(32, 8), bits=8, group_size=32)
    assert jax_ops.qmatmul(jnp.zeros((0, 32)), wq, scales, bits=8, group_size=32).shape == (0, 8)


def test_bad_arguments_raise_value_error():
    wq, scales = jax_ops.quantize_weight(_weights(64, 8), bits=8, group_size=32)
    x = jnp.ones((1, 64))
    with pytest.raises(ValueError, match="x must be float32"):
        jax_ops.qmatmul(x.astype(jnp.int32), wq, scales, bits=8, group_size=32)
    with pytest.raises(ValueError, match="wq must be int8"):
        jax_ops.qmatmul(x, wq.astype(jnp.uint8), scales, bits=8, group_size=32)
    with pytest.raises(ValueError, match=r"wq must be uint8 \(8, 32\)"):
        jax_ops.qmatmul(x, wq, scales, bits=4, group_size=32)
    with pytest.raises(ValueError, match="scales must be"):
        jax_ops.qmatmul(x, wq, scales, bits=8, group_size=16)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        jax_ops.qmatmul(x, wq, scales, bits=3, group_size=32)
    with pytest.raises(ValueError, match="group_size"):
        jax_ops.quantize_weight(np.ones((10, 4), np.float32), bits=4, group_size=3)
    with pytest.raises(ValueError, match="group_size"):
        mlforge.qmatmul(
            np.ones((1, 6), np.float32),
            np.zeros((1, 6), np.int8),
            np.ones((1, 2), np.float32),
            bits=8,
            group_size=4,
        )
    with pytest.raises(ValueError, match="wq must be"):
        mlforge.qmatmul(
            np.ones((1, 64), np.float32),
            np.zeros((8, 32), np.int8),
            np.asarray(scales),
            bits=8,
            group_size=32,
        )


# ---- attention ----


def _attention_reference(q, k, v, segment_ids):
    """Softmax attention in float64 numpy: causal, same non-zero segment; padding queries
    (no visible key) average all values, as a finite mask value does."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    seg = np.asarray(segment_ids)
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            scores = q[bi, :, hi] @ k[bi, :, hi // group].T / np.sqrt(d)  # (T, S)
            visible = np.tril(np.ones((t, t), bool)) & (seg[bi][:, None] == seg[bi][None, :]) & (seg[bi] != 0)
            scores = np.where(visible, scores, -1e30)
            p = np.exp(scores - scores.max(-1, keepdims=True))
            out[bi, :, hi] = (p / p.sum(-1, keepdims=True)) @ v[bi, :, hi // group]
    return out


def _attention_inputs(b, t, h, kvh, d, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, t, h, d), dtype=np.float32)
    k = rng.standard_normal((b, t, kvh, d), dtype=np.float32)
    v = rng.standard_normal((b, t, kvh, d), dtype=np.float32)
    seg = np.ones((b, t), np.int32)
    if b > 1:  # packed row: two documents, then padding
        seg[1, t // 2 :] = 2
        seg[1, t - 3 :] = 0
    if b > 2:  # left padding
        seg[2, :4] = 0
    return q, k, v, seg


@pytest.mark.parametrize("shape", [(3, 37, 6, 2, 16), (2, 64, 4, 4, 64), (1, 5, 3, 1, 8), (3, 33, 9, 3, 64)])
def test_attention_forward_matches_reference(shape):
    q, k, v, seg = _attention_inputs(*shape)
    got = np.asarray(jax.jit(jax_ops.attention)(q, k, v, seg))
    np.testing.assert_allclose(got, _attention_reference(q, k, v, seg), atol=2e-5, rtol=1e-5)


def test_attention_gradients_match_autodiff_of_the_reference():
    q, k, v, seg = _attention_inputs(3, 37, 6, 2, 16)
    seg_j = jnp.asarray(seg)
    t, d = q.shape[1], q.shape[3]
    visible = jnp.tril(jnp.ones((t, t), bool))[None] & (seg_j[:, :, None] == seg_j[:, None, :]) & (seg_j[:, None, :] != 0)

    def reference(q, k, v):
        kr = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)
        vr = jnp.repeat(v, q.shape[2] // v.shape[2], axis=2)
        scores = jnp.einsum("bthd,bshd->bhts", q, kr) * d**-0.5
        scores = jnp.where(visible[:, None], scores, -1e30)
        return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, -1), vr)

    dout = np.random.default_rng(1).standard_normal(q.shape, dtype=np.float32)
    ours = jax.grad(lambda *a: jnp.sum(jax_ops.attention(*a, seg_j) * dout), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(lambda *a: jnp.sum(reference(*a) * dout), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip(("dq", "dk", "dv"), ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4, err_msg=name)
    # Padding queries pass no gradient to q; keys of another document get none from this one.
    assert np.all(np.asarray(ours[0])[1, -3:] == 0) and np.all(np.asarray(ours[0])[2, :4] == 0)


def test_attention_bfloat16_inputs_compute_in_float32():
    q, k, v, seg = _attention_inputs(2, 16, 4, 2, 8)
    out = jax_ops.attention(jnp.asarray(q, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16), jnp.asarray(v, jnp.bfloat16), seg)
    assert out.dtype == jnp.bfloat16
    ref = _attention_reference(*(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32) for a in (q, k, v)), seg)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((2, 8, 6, 4), (2, 8, 4, 4), (2, 8, 4, 4), (2, 8)), "multiple of kv heads"),
        (((2, 8, 6, 4), (2, 7, 2, 4), (2, 7, 2, 4), (2, 8)), "do not fit"),
        (((2, 8, 6, 4), (2, 8, 2, 4), (2, 8, 2, 4), (2, 9)), "segment_ids must be"),
        (((8, 6, 4), (2, 8, 2, 4), (2, 8, 2, 4), (2, 8)), r"q must be \(B, T, H, D\)"),
    ],
)
def test_attention_bad_shapes_name_the_argument(shapes, match):
    q, k, v, seg = (np.zeros(s, np.int32 if i == 3 else np.float32) for i, s in enumerate(shapes))
    with pytest.raises(ValueError, match=match):
        jax_ops.attention(q, k, v, seg)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
