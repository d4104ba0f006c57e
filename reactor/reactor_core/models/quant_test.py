import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mlforge import jax_ops
from reactor_core.generation.generate import Generator
from reactor_core.models import quant
from reactor_core.models import reference_testing as ref
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.models.quant import QuantizedLinear, quantize_model


@pytest.mark.parametrize("bits,group_size,tol", [(8, None, 0.01), (8, 32, 0.01), (4, 32, 0.1)])
def test_dequantized_weights_are_close(bits, group_size, tol):
    kernel = jnp.asarray(np.random.RandomState(0).randn(64, 48).astype(np.float32))
    q = QuantizedLinear(kernel, bits=bits, group_size=group_size, dtype=jnp.float32)
    err = np.abs(np.asarray(q.dequantized()) - np.asarray(kernel)).max() / np.abs(np.asarray(kernel)).max()
    assert err < tol
    if bits == 4:
        assert q.qweight[...].dtype == jnp.uint8 and q.qweight[...].size == kernel.size // 2


def _float_and_quantized(preset: str, bits: int, shape: tuple[int, int]):
    """(config, tokens, float logits, the same-seed model quantized with groups of 32)."""
    config = LlamaConfig.preset(preset)
    tokens = jnp.asarray(ref.random_tokens(256, shape))
    reference = Llama(config, rngs=nnx.Rngs(0))(tokens)
    return config, tokens, reference, quantize_model(Llama(config, rngs=nnx.Rngs(0)), bits=bits, group_size=32)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_runs_and_generates(bits):
    _, tokens, reference, model = _float_and_quantized("tiny", bits, (1, 16))
    assert isinstance(model.model.layers[0].mlp.down_proj, QuantizedLinear)
    assert isinstance(model.lm_head, QuantizedLinear)
    assert not any(isinstance(v, nnx.Param) and v[...].dtype in (jnp.int8, jnp.uint8) for _, v in nnx.iter_graph(model))
    assert ref.max_rel_diff(model(tokens), reference) < (0.02 if bits == 8 else 0.3)
    out = Generator(model).generate([[5, 6, 7]], max_new_tokens=4)
    assert len(out.tokens[0]) == 4


@pytest.mark.parametrize("bits", [8, 4])
def test_tied_head_gets_an_int8_copy_that_makes_the_logits(bits):
    config, tokens, reference, model = _float_and_quantized("tiny-tied", bits, (2, 12))
    head = model.quantized_head
    assert head.bits == 8 and (head.in_features, head.out_features) == (config.hidden_size, config.vocab_size)
    wq, _ = head.row_layout()
    assert wq.dtype == jnp.int8 and wq.shape == (config.vocab_size, config.hidden_size)
    assert head.panels == quant.uses_panels(8, config.hidden_size)
    # The lookup keeps the float table; the head's copy is within int8 rounding of it.
    table = np.asarray(model.model.embed_tokens.embedding[...])
    np.testing.assert_allclose(np.asarray(head.dequantized()).T, table, atol=np.abs(table).max() / 127)
    assert ref.max_rel_diff(model(tokens), reference) < (0.02 if bits == 8 else 0.3)
    out = Generator(model).generate([[5, 6, 7]], max_new_tokens=3)
    assert len(out.tokens[0]) == 3
    head.scales[...] = jnp.zeros_like(head.scales[...])  # the logits really come from the copy
    assert not np.any(np.asarray(model(tokens)))


def _int8_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (..., I) as the kernel quantizes it (mlforge/qmatmul.h): float64 values of the int8
    blocks of 32 times their float32 scales, and each value's step (the block's scale)."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    d = np.abs(blocks).max(-1, keepdims=True) / np.float32(127)
    xq = np.where(d > 0, np.rint(blocks / np.where(d > 0, d, 1)), 0)
    step = np.broadcast_to(d, blocks.shape).astype(np.float64)
    return (xq * d.astype(np.float64)).reshape(x.shape), step.reshape(x.shape)


@pytest.mark.parametrize("bits,group_size", [(8, None), (8, 32), (4, 32), (4, 64)])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 4), (1, 8), (3, 100)])  # last: 300 rows, dequantize + dot
def test_call_matches_reference_of_dequantized_weights(bits, group_size, lead):
    kernel = jnp.asarray(np.random.RandomState(0).randn(128, 80).astype(np.float32))
    layer = QuantizedLinear(kernel, bits=bits, group_size=group_size, dtype=jnp.float32)
    x = np.random.RandomState(1).randn(*lead, 128).astype(np.float32)
    y = np.asarray(nnx.jit(lambda m, x: m(x))(layer, jnp.asarray(x)))
    w = np.asarray(layer.dequantized()).astype(np.float64)  # (I, O)
    want = x.astype(np.float64) @ w  # (..., O)
    assert y.shape == (*lead, 80)
    if math.prod(lead) > quant.KERNEL_MAX_ROWS:  # dequantize + XLA's float dot
        assert lead == (3, 100)
        np.testing.assert_allclose(y, want, rtol=0, atol=2e-5 * np.abs(want).max())
        return
    # The kernel: int8 activation blocks times the weights, and within the rounding of x.
    x_hat, step = _int8_activations(x)
    np.testing.assert_allclose(y, x_hat @ w, rtol=0, atol=1e-5 * np.abs(want).max())
    assert np.all(np.abs(y - want) <= (step / 2) @ np.abs(w) + 1e-6)


@pytest.mark.parametrize("bits", [8, 4])
def test_decode_runs_the_kernel_and_matches_the_dequantized_path(bits, monkeypatch):
    config = LlamaConfig.preset("tiny")
    model = quantize_model(Llama(config, rngs=nnx.Rngs(0)), bits=bits, group_size=32)
    tokens = jnp.asarray(ref.random_tokens(256, (1, 6)))
    rows = []

    def counting(real):
        def kernel(x, *args, **kwargs):
            rows.append(math.prod(x.shape[:-1]))
            return real(x, *args, **kwargs)

        return kernel

    # Row-layout kernel, or the panel layout's where int8 weights use it (AVX-512 VNNI).
    monkeypatch.setattr(jax_ops, "qmatmul", counting(jax_ops.qmatmul))
    monkeypatch.setattr(jax_ops, "qmatmul_panel", counting(jax_ops.qmatmul_panel))
    logits_kernel = nnx.jit(lambda m, t: m(t))(model, tokens)  # 6 rows: every linear on the kernel
    fast = Generator(model).generate([[5, 6, 7], [9, 10]], max_new_tokens=5)
    assert rows and max(rows) <= quant.KERNEL_MAX_ROWS
    assert 2 in rows  # the decode step (batch 2, one token each) went through the kernel

    monkeypatch.setattr(quant, "KERNEL_MAX_ROWS", 0)  # everything on dequantize + XLA dot
    n_kernel_calls = len(rows)
    logits_xla = nnx.jit(lambda m, t: m(t))(model, tokens)
    slow = Generator(model).generate([[5, 6, 7], [9, 10]], max_new_tokens=5)
    assert len(rows) == n_kernel_calls
    scale = float(jnp.abs(logits_xla).max())
    # The kernel quantizes activations to int8 blocks (XLA's dot keeps them in float): logits
    # move by ~1% of their range (measured 1.0%), and greedy decoding still agrees.
    np.testing.assert_allclose(np.asarray(logits_kernel), np.asarray(logits_xla), rtol=0, atol=0.03 * scale)
    assert fast.tokens == slow.tokens


@pytest.mark.parametrize("lead", [(1,), (16,), (3, 100)])
def test_panel_layout_equals_the_row_layout(lead, monkeypatch):
    kernel = jnp.asarray(np.random.RandomState(0).randn(576, 200).astype(np.float32))
    x = jnp.asarray(np.random.RandomState(1).randn(*lead, 576).astype(np.float32))
    monkeypatch.setattr(quant, "uses_panels", lambda bits, group: True)
    panels = QuantizedLinear(kernel, bits=8, group_size=None, dtype=jnp.float32)
    monkeypatch.setattr(quant, "uses_panels", lambda bits, group: False)
    rows = QuantizedLinear(kernel, bits=8, group_size=None, dtype=jnp.float32)
    assert panels.panels and not rows.panels and panels.qweight[...].shape == (13, 144, 16, 4)
    np.testing.assert_array_equal(panels.row_layout()[0], rows.qweight[...])
    y_panels, y_rows = (np.asarray(nnx.jit(lambda m, x: m(x))(m, x)) for m in (panels, rows))
    if jax_ops.panel_native():  # else the panel kernel is a portable loop with other roundings
        np.testing.assert_array_equal(y_panels, y_rows)
    else:
        np.testing.assert_allclose(y_panels, y_rows, rtol=1e-5, atol=1e-5 * np.abs(y_rows).max())


def test_bfloat16_layer_uses_the_kernel_in_float32():
    kernel = jnp.asarray(np.random.RandomState(0).randn(64, 32).astype(np.float32))
    layer = QuantizedLinear(kernel, bits=8, group_size=None, dtype=jnp.bfloat16)
    x = jnp.asarray(np.random.RandomState(1).randn(2, 64), jnp.bfloat16)
    y = jax.jit(lambda x: layer(x))(x)
    assert y.dtype == jnp.bfloat16
    w = np.asarray(layer.dequantized().astype(jnp.float32))
    want = np.asarray(x.astype(jnp.float32)) @ w
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), want, rtol=2e-2, atol=2e-2 * np.abs(want).max())


def test_bad_group_size_is_rejected():
    with pytest.raises(ValueError, match="group_size"):
        QuantizedLinear(jnp.ones((10, 4)), bits=4, group_size=3, dtype=jnp.float32)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
