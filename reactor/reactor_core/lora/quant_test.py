"""QLoRA storage: NF4 levels, double-quantised scales, int8, dequantisation under jit."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.lora import quant

# NF4 levels as published with QLoRA (Dettmers et al. 2023, appendix E).
PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]  # fmt: skip


def _weights(shape=(128, 192), seed=0):
    return 0.02 * jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_nf4_levels_match_the_paper():
    np.testing.assert_allclose(quant.nf4_levels(), PUBLISHED_NF4, atol=2e-6)


def test_nf4_codes_are_nearest_levels():
    levels = quant.nf4_levels()
    x = jnp.linspace(-1, 1, 1001)
    idx = np.asarray(quant._nf4_index(x))
    nearest = np.abs(np.asarray(x)[:, None] - levels[None]).argmin(-1)
    np.testing.assert_array_equal(idx, nearest)


@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_round_trip(double_quant):
    w = _weights()
    q = quant.quantize_nf4(w, block_size=64, double_quant=double_quant)
    assert q["codes"].dtype == jnp.uint8 and q["codes"].size == w.size // 2
    back = quant.dequantize_nf4(q, w.shape, block_size=64, dtype=jnp.float32)
    rel = float(jnp.abs(back - w).mean() / jnp.abs(w).mean())
    assert rel < 0.12, rel  # 4 bits for normal weights: ~9% mean error
    # The largest weight of each block is exact up to the (double-quantised) scale.
    if not double_quant:
        blocks = np.asarray(w).reshape(-1, 64)
        rows = np.arange(len(blocks))
        top = np.abs(blocks).argmax(-1)
        np.testing.assert_allclose(np.asarray(back).reshape(-1, 64)[rows, top], blocks[rows, top], rtol=1e-6)


def test_double_quant_changes_scales_little():
    w = _weights()
    plain = quant.dequantize_nf4(
        quant.quantize_nf4(w, block_size=64, double_quant=False), w.shape, block_size=64, dtype=jnp.float32
    )
    dq = quant.dequantize_nf4(
        quant.quantize_nf4(w, block_size=64, double_quant=True), w.shape, block_size=64, dtype=jnp.float32
    )
    assert float(jnp.abs(plain - dq).max()) < 0.01 * float(jnp.abs(w).max())


def test_int8_round_trip():
    w = _weights()
    back = quant.dequantize_int8(quant.quantize_int8(w), jnp.float32)
    col_max = jnp.abs(w).max(axis=0)
    assert bool(jnp.all(jnp.abs(back - w) <= col_max / 127 / 2 + 1e-7))


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_quantized_linear_inside_jit(mode):
    w = _weights((64, 32))
    layer = quant.QuantizedLinear(w, mode=mode, block_size=32, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (3, 64))
    y = jax.jit(lambda x: layer(x))(x)
    assert y.dtype == jnp.bfloat16 and y.shape == (3, 32)
    ref = x @ w
    cos = float(jnp.sum(y.astype(jnp.float32) * ref) / (jnp.linalg.norm(y.astype(jnp.float32)) * jnp.linalg.norm(ref)))
    assert cos > (0.99 if mode == "nf4" else 0.999)


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_gradient_matches_dense(mode):
    layer = quant.QuantizedLinear(_weights((64, 32)), mode=mode, block_size=32)
    x = jax.random.normal(jax.random.key(1), (3, 64))
    g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(layer(x)))))(x)
    dense = layer.dequantize(jnp.float32)
    np.testing.assert_allclose(g, jax.grad(lambda x: jnp.sum(jnp.sin(x @ dense)))(x), atol=1e-6)


def _grad_temp_bytes(mode: str) -> int:
    from flax import nnx

    from reactor_core.lora import lora
    from reactor_core.models.config import LlamaConfig
    from reactor_core.models.llama import Llama
    from reactor_core.train.config import LoraConfig, QuantConfig

    cfg = LlamaConfig.preset("tiny").replace(num_layers=6, hidden_size=256, intermediate_size=1024, num_kv_heads=4)

    def build():
        model = Llama(cfg, rngs=nnx.Rngs(0))
        lora.quantize_base(model, QuantConfig(mode=mode))
        lora.apply_lora(model, LoraConfig(rank=8), rngs=nnx.Rngs(1))
        return model

    graphdef, adapters, rest = nnx.split(nnx.eval_shape(build), lora.TRAINABLE, ...)
    tokens = jax.ShapeDtypeStruct((2, 64), jnp.int32)
    grad = jax.jit(jax.grad(lambda p, r, t: jnp.sum(nnx.merge(graphdef, p, r)(t))))
    return grad.lower(adapters, rest, tokens).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_training_keeps_no_dense_copy_of_the_base(mode):
    """Dequantised kernels live one at a time: the QLoRA step needs about the LoRA step's scratch."""
    dense_kernels = 6 * (4 * 256 * 256 + 3 * 256 * 1024) * 4
    extra = _grad_temp_bytes(mode) - _grad_temp_bytes("none")
    assert extra < dense_kernels / 8, (extra, dense_kernels)


def test_bits_per_weight():
    assert quant.bits_per_weight("nf4") == pytest.approx(4.127, abs=1e-3)  # 4 + 8/64 + 32/(64*256)
    assert quant.bits_per_weight("nf4", double_quant=False) == 4.5
    assert quant.bits_per_weight("int8") == 8.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of block_size"):
        quant.quantize_nf4(jnp.ones((3, 5)), block_size=64)
    with pytest.raises(ValueError, match="mode"):
        quant.QuantizedLinear(jnp.ones((4, 4)), mode="fp4")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
