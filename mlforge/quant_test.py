"""mlforge.quantize / dequantize against mlx.core (bit-exact).

bazel test //mlforge:quant_py_test
"""

import sys
import threading

import mlx.core as mx
import numpy as np
import pytest

import mlforge

GROUP_SIZES = [32, 64, 128]
BITS = [2, 3, 4, 5, 6, 8]


def _matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-3, 3, (rows, 1))
    w[0] = 0.0  # zero row
    w[1] = 3.5  # constant rows
    w[2] = -0.0625
    w[3] = -np.abs(w[3])  # all negative
    w[4] = np.abs(w[4])  # all positive
    w[5] *= 1e30  # large magnitude
    w[6] = np.where(np.arange(cols) % 2, 3e38, -3e38)  # range overflows float32
    w[7] = np.round(w[7] * 2) / 2  # many exact ties
    w[8] *= 1e-30  # tiny
    w[9] = np.where(np.arange(cols) % 3 == 0, -0.0, np.where(np.arange(cols) % 3 == 1, 0.0, w[9]))
    return w.astype(np.float32)


def _mlx_quantize(w, group_size, bits):
    return [np.array(a) for a in mx.quantize(mx.array(w), group_size=group_size, bits=bits)]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_quantize_matches_mlx(group_size, bits):
    w = _matrix(12, 512, seed=group_size * 10 + bits)
    ours = mlforge.quantize(w, group_size=group_size, bits=bits)
    theirs = _mlx_quantize(w, group_size, bits)
    for name, a, b in zip(("wq", "scales", "biases"), ours, theirs):
        assert _same_bits(a, b), f"{name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_dequantize_matches_mlx(group_size, bits):
    w = _matrix(12, 256, seed=bits)
    wq, scales, biases = _mlx_quantize(w, group_size, bits)
    ours = mlforge.dequantize(wq, scales, biases, group_size=group_size, bits=bits)
    theirs = np.array(
        mx.dequantize(
            mx.array(wq), mx.array(scales), mx.array(biases), group_size=group_size, bits=bits
        )
    )
    assert _same_bits(ours, theirs)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_float16_matches_mlx(bits):
    w = np.clip(_matrix(12, 256, seed=3), -6e4, 6e4).astype(np.float16)
    ours = mlforge.quantize(w, group_size=64, bits=bits)
    theirs = _mlx_quantize(w, 64, bits)
    for a, b in zip(ours, theirs):
        assert _same_bits(a, b)
    back = mlforge.dequantize(*ours, group_size=64, bits=bits)
    expect = np.array(mx.dequantize(*[mx.array(t) for t in theirs], group_size=64, bits=bits))
    assert _same_bits(back, expect)


def test_large_matrix_on_all_threads_matches_mlx():
    w = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    for a, b in zip(mlforge.quantize(w, 64, 4), _mlx_quantize(w, 64, 4)):
        assert _same_bits(a, b)


def test_accepts_mlx_arrays_and_non_contiguous_input():
    w = _matrix(10, 256, seed=1)
    expect = mlforge.quantize(w, 32, 4)
    for given in (mx.array(w), np.asfortranarray(w)):
        for a, b in zip(mlforge.quantize(given, 32, 4), expect):
            assert _same_bits(a, b)


def test_concurrent_calls_release_the_gil():
    w = _matrix(64, 1024, seed=2)
    expect = mlforge.quantize(w, 64, 4)[0]
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(mlforge.quantize(w, 64, 4)[0]))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(_same_bits(r, expect) for r in results)


@pytest.mark.parametrize(
    "w, kwargs, match",
    [
        (np.ones((4, 64), np.int32), {}, "w must be float32"),
        (np.ones((4, 64), np.float64), {}, "w must be float32"),
        (np.ones(64, np.float32), {}, "w must be 2-D"),
        (np.ones((2, 4, 64), np.float32), {}, "w must be 2-D"),
        (np.ones((0, 64), np.float32), {}, "w must be non-empty"),
        (np.ones((4, 96), np.float32), {"group_size": 64}, r"w.shape\[1\] \(96\)"),
        (np.ones((4, 64), np.float32), {"bits": 7}, "bits"),
        (np.ones((4, 64), np.float32), {"bits": 4.0}, "bits"),
        (np.ones((4, 64), np.float32), {"group_size": 16}, "group_size"),
        (np.full((4, 64), np.nan, np.float32), {}, "NaN or Inf"),
        (np.full((4, 64), np.inf, np.float32), {}, "NaN or Inf"),
        ("not an array", {}, "w must be float32"),
    ],
)
def test_quantize_rejects_bad_input(w, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mlforge.quantize(w, **kwargs)


def test_dequantize_rejects_bad_input():
    wq, scales, biases = mlforge.quantize(np.ones((4, 128), np.float32), 64, 4)
    with pytest.raises(ValueError, match="wq must have dtype uint32"):
        mlforge.dequantize(wq.astype(np.int64), scales, biases, 64, 4)
    with pytest.raises(ValueError, match="scales"):
        mlforge.dequantize(wq, scales, biases, 32, 4)  # group_size disagrees with scales
    with pytest.raises(ValueError, match="biases must have the shape"):
        mlforge.dequantize(wq, scales, biases[:, :1], 64, 4)
    with pytest.raises(ValueError, match="scales has 2 rows"):
        mlforge.dequantize(wq, scales[:2], biases[:2], 64, 4)
    with pytest.raises(ValueError, match="wq must be 2-D"):
        mlforge.dequantize(wq[0], scales, biases, 64, 4)
    with pytest.raises(ValueError, match="bits"):
        mlforge.dequantize(wq, scales, biases, 64, 1)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
