"""mlforge.gguf_quantize / gguf_dequantize against gguf.quants (byte-exact).

bazel test //mlforge:gguf_codec_py_test
"""

import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

import mlforge

QTYPES = ["Q8_0", "Q4_0", "Q4_1"]


def _data(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 4, shape[:-1] + (1,))
    flat = x.reshape(-1, shape[-1])
    flat[0] = 0.0  # zero blocks
    flat[1] = 1.5  # constant
    flat[2, ::2] = -flat[2, 1::2]  # ties of |max| with both signs
    flat[3] = np.round(flat[3] * 4) / 4
    flat[4] *= 1e6  # float16 overflow of d
    flat[5] *= 1e-9  # float16 subnormal d
    flat[6, ::3] = -0.0  # blocks mixing +0.0 and -0.0 (sign of a zero min)
    flat[6, 1::3] = 0.0
    return x.astype(np.float32)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape", [(8, 256), (2, 5, 64), (32,)])
@pytest.mark.parametrize("name", QTYPES)
def test_quantize_matches_gguf(name, shape):
    rows = int(np.prod(shape[:-1]))
    pick = np.random.default_rng(0).permutation(16)[:rows]  # mixes edge and random rows
    x = _data((16, shape[-1]), seed=len(name))[pick].reshape(shape)
    qtype = GGMLQuantizationType[name]
    with np.errstate(all="ignore"):
        expect = quants.quantize(x, qtype)
    assert _same(mlforge.gguf_quantize(x, name), expect)
    assert _same(mlforge.gguf_quantize(x, qtype), expect)  # enum
    assert _same(mlforge.gguf_quantize(x, int(qtype)), expect)  # enum value


@pytest.mark.parametrize("name", QTYPES)
def test_quantize_edge_rows_match_gguf(name):
    x = _data((16, 512), seed=7)
    with np.errstate(all="ignore"):
        expect = quants.quantize(x, GGMLQuantizationType[name])
    assert _same(mlforge.gguf_quantize(x, name), expect)


@pytest.mark.parametrize("name", QTYPES)
def test_float64_and_float16_input_quantize_as_float32(name):
    x = _data((8, 64), seed=3).astype(np.float64) / 1e3
    for given in (x, x.astype(np.float16)):
        expect = quants.quantize(given, GGMLQuantizationType[name])
        assert _same(mlforge.gguf_quantize(given, name), expect)


@pytest.mark.parametrize("name", QTYPES)
def test_dequantize_matches_gguf_on_any_bytes(name):
    qtype = GGMLQuantizationType[name]
    block_bytes = quants.GGML_QUANT_SIZES[qtype][1]
    # Random bytes include float16 NaN/Inf/subnormal scales.
    data = np.random.default_rng(1).integers(0, 256, (6, 8 * block_bytes), dtype=np.uint8)
    with np.errstate(all="ignore"):
        expect = quants.dequantize(data, qtype)
    ours = mlforge.gguf_dequantize(data, name)
    assert ours.dtype == np.float32 and ours.shape == expect.shape
    np.testing.assert_array_equal(ours, expect)  # NaN positions must agree too
    assert _same(mlforge.gguf_dequantize(data, qtype, shape=(3, 2, 256)), expect.reshape(3, 2, 256))


@pytest.mark.parametrize("name", QTYPES)
def test_round_trip(name):
    x = np.random.default_rng(2).standard_normal((64, 128)).astype(np.float32)
    back = mlforge.gguf_dequantize(mlforge.gguf_quantize(x, name), name, x.shape)
    assert back.shape == x.shape
    tol = {"Q8_0": 0.02, "Q4_0": 0.4, "Q4_1": 0.3}[name]
    assert np.abs(back - x).max() < tol


def test_rejects_bad_input():
    x = np.ones((4, 64), np.float32)
    cases = [
        (lambda: mlforge.gguf_quantize(x, "Q5_K"), "qtype"),
        (lambda: mlforge.gguf_quantize(x, 12), "qtype"),
        (lambda: mlforge.gguf_quantize(x, None), "qtype"),
        (
            lambda: mlforge.gguf_quantize(np.ones((4, 48), np.float32), "Q8_0"),
            r"x.shape\[-1\] \(48\)",
        ),
        (lambda: mlforge.gguf_quantize(np.ones((4, 64), np.int32), "Q8_0"), "x must be a float"),
        (
            lambda: mlforge.gguf_quantize(np.ones((0, 64), np.float32), "Q8_0"),
            "x must be non-empty",
        ),
        (lambda: mlforge.gguf_quantize(np.float32(1.0), "Q8_0"), "x must have at least one"),
        (lambda: mlforge.gguf_quantize(np.full((1, 32), np.nan, np.float32), "Q4_0"), "NaN or Inf"),
        (lambda: mlforge.gguf_dequantize(np.zeros((2, 35), np.uint8), "Q8_0"), "data.shape"),
        (
            lambda: mlforge.gguf_dequantize(np.zeros((2, 34), np.int8), "Q8_0"),
            "data must have dtype uint8",
        ),
        (lambda: mlforge.gguf_dequantize(np.zeros((2, 34), np.uint8), "Q8_0", (3, 32)), "shape"),
        (
            lambda: mlforge.gguf_dequantize(np.zeros((0, 34), np.uint8), "Q8_0"),
            "data must be non-empty",
        ),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
