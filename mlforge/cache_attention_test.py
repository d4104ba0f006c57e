"""mlforge.jax_ops.cache_attention (slot KV cache attention) against a float64 numpy reference.

float16 caches are checked against the reference on their float16 values (the float32
path's tolerance): the kernel must lose nothing beyond the rounding of the cache itself.

    bazel test //mlforge:cache_attention_test
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlforge import jax_ops

RTOL, ATOL = 1e-5, 2e-6
CACHE_DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float16])


def _reference(q, k_cache, v_cache, slots, q_positions, scale=None):
    """softmax(q . k * scale) @ v over keys 0..position of each query's cache row, float64."""
    b, t, h, d = q.shape
    group = h // k_cache.shape[2]
    scale = d**-0.5 if scale is None else scale
    out = np.zeros((b, t, h, d))
    for bi in range(b):
        k = k_cache[slots[bi]][:, np.arange(h) // group].astype(np.float64)  # (S, H, D)
        v = v_cache[slots[bi]][:, np.arange(h) // group].astype(np.float64)  # (S, H, D)
        for ti in range(t):
            p = q_positions[bi, ti]
            if p < 0:
                continue
            s = np.einsum("hd,shd->hs", q[bi, ti].astype(np.float64), k[: p + 1]) * scale
            w = np.exp(s - s.max(axis=1, keepdims=True))  # (H, P)
            out[bi, ti] = np.einsum("hs,shd->hd", w / w.sum(axis=1, keepdims=True), v[: p + 1])
    return out


def _inputs(b, t, h, kvh, d, n, s, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, t, h, d), dtype=np.float32)
    k = rng.standard_normal((n, s, kvh, d), dtype=np.float32).astype(dtype)
    v = rng.standard_normal((n, s, kvh, d), dtype=np.float32).astype(dtype)
    return q, k, v


def _check(q, k, v, slots, pos, **kw):
    slots, pos = np.asarray(slots, np.int32), np.asarray(pos, np.int32)
    got = jax.jit(lambda *a: jax_ops.cache_attention(*a, **kw))(q, k, v, slots, pos)
    assert got.shape == q.shape and got.dtype == jnp.float32
    want = _reference(q, k, v, slots, pos, kw.get("scale"))
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)
    return np.asarray(got)


@CACHE_DTYPES
@pytest.mark.parametrize("h,kvh", [(4, 4), (9, 3), (8, 2)])  # GQA ratios 1, 3, 4
@pytest.mark.parametrize("d", [8, 64, 128])
def test_decode_rows_with_own_lengths_and_shared_slots(h, kvh, d, dtype):
    q, k, v = _inputs(5, 1, h, kvh, d, n=3, s=300, seed=d + h, dtype=dtype)
    slots = [0, 2, 2, 1, 0]  # rows 1-2 and 0-4 read the same cache row
    pos = [[17], [299], [0], [140], [64]]
    _check(q, k, v, slots, pos)


@CACHE_DTYPES
@pytest.mark.parametrize("h,kvh", [(4, 4), (9, 3), (8, 2)])
@pytest.mark.parametrize("d", [8, 64, 128])
def test_prefill_chunk_starting_mid_cache(h, kvh, d, dtype):
    q, k, v = _inputs(1, 64, h, kvh, d, n=2, s=512, seed=d, dtype=dtype)
    pos = np.arange(200, 264)[None]  # this chunk's keys 200..263 are already in the cache
    _check(q, k, v, [1], pos)


@CACHE_DTYPES
def test_chunks_of_the_engine_sizes_with_padding_tail(dtype):
    for t in (16, 256):
        q, k, v = _inputs(1, t, 9, 3, 64, n=2, s=600, seed=t, dtype=dtype)
        pos = np.arange(300, 300 + t)[None].copy()
        pos[0, t - 5 :] = -1  # a last chunk shorter than T
        got = _check(q, k, v, [0], pos)
        assert np.all(got[0, t - 5 :] == 0)


@CACHE_DTYPES
def test_padding_queries_give_zeros(dtype):
    q, k, v = _inputs(3, 4, 6, 2, 64, n=2, s=50, seed=3, dtype=dtype)
    pos = [[-1, 3, -1, 5], [-1, -1, -1, -1], [10, 11, 12, -7]]
    got = _check(q, k, v, [1, 0, 1], pos)
    for bi, ti in [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3), (2, 3)]:
        assert np.all(got[bi, ti] == 0), (bi, ti)
    assert np.abs(got[0, 1]).max() > 0.01


@CACHE_DTYPES
def test_first_and_last_position(dtype):
    q, k, v = _inputs(2, 1, 8, 2, 64, n=2, s=128, seed=4, dtype=dtype)
    got = _check(q, k, v, [1, 0], [[0], [127]])
    # Position 0 sees one key, so each head returns its kv head's first value row.
    np.testing.assert_allclose(got[0, 0], v[1, 0][np.arange(8) // 4].astype(np.float32), rtol=1e-6)


@CACHE_DTYPES
def test_scale_and_unused_cache_is_never_read(dtype):
    q, k, v = _inputs(2, 3, 4, 2, 64, n=2, s=400, seed=5, dtype=dtype)
    pos = np.array([[40, 41, 42], [7, 8, 9]], np.int32)
    want = _reference(q, k, v, np.array([0, 1]), pos, scale=0.3)
    k[0, 43:], v[0, 43:], k[1, 10:], v[1, 10:] = np.nan, np.nan, np.nan, np.nan
    got = jax_ops.cache_attention(q, k, v, np.array([0, 1], np.int32), pos, scale=0.3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


@CACHE_DTYPES
def test_decode_step_with_donated_caches(dtype):
    """The engine's use: write this step's keys into the donated caches, then attend."""
    q, k, v = _inputs(2, 1, 9, 3, 64, n=4, s=64, seed=6, dtype=dtype)
    rng = np.random.default_rng(7)
    k_new = rng.standard_normal((2, 3, 64), dtype=np.float32).astype(dtype)
    v_new = rng.standard_normal((2, 3, 64), dtype=np.float32).astype(dtype)
    slots, lengths = np.array([3, 1], np.int32), np.array([20, 5], np.int32)

    def step(k_cache, v_cache, q, k_new, v_new, slots, lengths):
        k_cache = k_cache.at[slots, lengths].set(k_new)
        v_cache = v_cache.at[slots, lengths].set(v_new)
        out = jax_ops.cache_attention(q, k_cache, v_cache, slots, lengths[:, None])
        return out, k_cache, v_cache

    step = jax.jit(step, donate_argnums=(0, 1))
    k_want, v_want = k.copy(), v.copy()
    k_want[slots, lengths], v_want[slots, lengths] = k_new, v_new
    out, k2, v2 = step(jnp.asarray(k), jnp.asarray(v), q, k_new, v_new, slots, lengths)
    np.testing.assert_array_equal(np.asarray(k2), k_want)  # caches only read by the kernel
    np.testing.assert_array_equal(np.asarray(v2), v_want)
    want = _reference(q, k_want, v_want, slots, lengths[:, None])
    np.testing.assert_allclose(np.asarray(out), want, rtol=RTOL, atol=ATOL)


def test_jit_lowers_to_the_ffi_custom_call():
    q, k, v = _inputs(1, 1, 4, 2, 8, n=1, s=8)
    slots, pos = np.zeros(1, np.int32), np.zeros((1, 1), np.int32)
    text = jax.jit(jax_ops.cache_attention).lower(q, k, v, slots, pos).as_text()
    assert "mlforge_cache_attention" in text


def test_float16_caches_reach_the_kernel_unconverted():
    """Widening in XLA first would read and write the whole cache: the kernel reads float16."""
    q, k, v = _inputs(1, 1, 4, 2, 8, n=1, s=8, dtype=np.float16)
    slots, pos = np.zeros(1, np.int32), np.zeros((1, 1), np.int32)
    text = jax.jit(jax_ops.cache_attention).lower(q, k, v, slots, pos).as_text()
    call = next(line for line in text.splitlines() if "mlforge_cache_attention" in line)
    assert call.count("tensor<1x8x2x8xf16>") == 2, call
    assert "convert" not in text


def test_float16_result_differs_from_the_unrounded_cache():
    """The float16 comparisons can fail: rounding the cache moves the result past RTOL."""
    q, k, v = _inputs(2, 1, 9, 3, 64, n=2, s=300, seed=8)
    slots, pos = np.array([0, 1], np.int32), np.array([[200], [299]], np.int32)
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    got = np.asarray(jax_ops.cache_attention(q, k16, v16, slots, pos))
    want = _reference(q, k16, v16, slots, pos)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got, _reference(q, k, v, slots, pos), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(q=np.zeros((1, 4, 8), np.float32)), "q must be float32"),
        (dict(q=np.zeros((1, 1, 4, 8), np.float16)), "q must be float32"),
        (dict(k=np.zeros((2, 16, 2, 16), np.float32), v=np.zeros((2, 16, 2, 16), np.float32)),
         "fit q"),
        (dict(k=np.zeros((2, 16, 3, 8), np.float32), v=np.zeros((2, 16, 3, 8), np.float32)),
         "fit q"),
        (dict(k=np.zeros((2, 16, 2, 8), np.float16)), "v_cache must have k_cache's dtype float16"),
        (dict(v=np.zeros((2, 16, 2, 8), np.float16)), "v_cache must have k_cache's dtype float32"),
        (
            dict(k=np.zeros((2, 16, 2, 8), jnp.bfloat16), v=np.zeros((2, 16, 2, 8), jnp.bfloat16)),
            "k_cache must be float32 or float16",
        ),
        (dict(v=np.zeros((2, 15, 2, 8), np.float32)), "v_cache must have"),
        (dict(slots=np.zeros((2,), np.int32)), r"slots must be integer \(1,\)"),
        (dict(slots=np.zeros((1,), np.float32)), "slots must be integer"),
        (dict(pos=np.zeros((1, 2), np.int32)), r"q_positions must be integer \(1, 1\)"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_argument(change, match):
    q, k, v = _inputs(1, 1, 4, 2, 8, n=2, s=16)
    args = dict(q=q, k=k, v=v, slots=np.zeros(1, np.int32), pos=np.zeros((1, 1), np.int32))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        jax_ops.cache_attention(args["q"], args["k"], args["v"], args["slots"], args["pos"])


@pytest.mark.parametrize(
    "slots,pos,match",
    [
        ([2], [[3]], r"slots\[0\] = 2"),
        ([-1], [[3]], "slots"),
        ([1], [[16]], r"q_positions\[0, 0\] = 16"),
    ],
)
def test_bad_slot_or_position_fails_at_run_time_naming_it(slots, pos, match):
    q, k, v = _inputs(1, 1, 4, 2, 8, n=2, s=16)
    fn = jax.jit(jax_ops.cache_attention)
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(fn(q, k, v, np.array(slots, np.int32), np.array(pos, np.int32)))


@pytest.mark.parametrize(
    "k_dtype,v_dtype,match",
    [
        (np.float16, np.float32, "v_cache must be float16 like k_cache"),
        (np.float32, np.float16, "v_cache must be float32 like k_cache"),
        (np.int16, np.int16, "k_cache must be float32 or float16"),
    ],
)
def test_handler_rejects_cache_dtypes_naming_the_argument(k_dtype, v_dtype, match):
    """The FFI handler checks dtypes itself, for callers that bypass the facade."""
    q, k, v = _inputs(1, 1, 4, 2, 8, n=2, s=16)
    slots, pos = np.zeros(1, np.int32), np.zeros((1, 1), np.int32)
    jax_ops._register()
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(
            jax_ops._cache_attention_ffi(q, k.astype(k_dtype), v.astype(v_dtype), slots, pos, 0.5)
        )


def test_differentiating_raises_a_clear_error():
    q, k, v = _inputs(1, 1, 4, 2, 8, n=1, s=8)
    slots, pos = np.zeros(1, np.int32), np.ones((1, 1), np.int32)

    def loss(q):
        return jax_ops.cache_attention(q, k, v, slots, pos).sum()

    with pytest.raises(TypeError, match="forward-only"):
        jax.grad(loss)(q)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
