"""LoRA tree surgery on the tiny Llama: step-0 identity, trainable split, switch-off, merge."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.lora import lora
from reactor_core.lora.quant import QuantizedLinear
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train.config import LoraConfig, QuantConfig

CFG = LlamaConfig.preset("tiny")


def _tokens():
    return jax.random.randint(jax.random.key(1), (2, 12), 0, CFG.vocab_size)


def _model():
    return Llama(CFG, rngs=nnx.Rngs(0))


def _randomize_b(model, seed=2):
    for i, (_, layer) in enumerate(lora.lora_layers(model)):
        shape = layer.lora_b.get_value().shape
        layer.lora_b.set_value(0.1 * jax.random.normal(jax.random.key(seed + i), shape))


def test_step_zero_equals_base_model():
    model = _model()
    base = model(_tokens())
    lora.apply_lora(model, LoraConfig(rank=4, targets="all-linear"), rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(model(_tokens()), base)


@pytest.mark.parametrize("targets, per_layer", [("q,v", 2), ("q,k,v,o", 4), ("all-linear", 7)])
def test_targets_and_only_adapters_are_trainable(targets, per_layer):
    model = _model()
    lora.apply_lora(model, LoraConfig(rank=4, targets=targets), rngs=nnx.Rngs(1))
    layers = list(lora.lora_layers(model))
    assert len(layers) == per_layer * CFG.num_layers
    assert all(path[-1] in LoraConfig(targets=targets).targets for path, _ in layers)
    trainable = nnx.state(model, lora.TRAINABLE)
    sizes = [x.size for x in jax.tree.leaves(trainable)]
    assert len(sizes) == 2 * len(layers)
    expected = sum(4 * (m.in_features + m.out_features) for _, m in layers)
    assert sum(sizes) == expected
    # The embedding and the LM head are never wrapped.
    assert not isinstance(model.lm_head, lora.LoRALinear)


def test_gradients_reach_adapters_only():
    model = _model()
    lora.apply_lora(model, LoraConfig(rank=4), rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(model, lora.TRAINABLE, ...)

    def loss(p):
        return jnp.mean(nnx.merge(graphdef, p, rest)(_tokens()) ** 2)

    grads = jax.grad(loss)(params)
    flat = dict(nnx.to_flat_state(grads))
    assert flat and all(path[-1] in ("lora_a", "lora_b") for path in flat)
    # B starts at zero, so A's gradient is zero and B's is not.
    assert any(float(jnp.abs(v.get_value()).max()) > 0 for p, v in flat.items() if p[-1] == "lora_b")


def test_disabled_gives_base_and_restores():
    model = _model()
    base = model(_tokens())
    lora.apply_lora(model, LoraConfig(rank=4), rngs=nnx.Rngs(1))
    _randomize_b(model)
    tuned = model(_tokens())
    assert float(jnp.abs(tuned - base).max()) > 1e-3
    with lora.disabled(model):
        np.testing.assert_array_equal(model(_tokens()), base)
    np.testing.assert_array_equal(model(_tokens()), tuned)


def test_merge_matches_adapter_model():
    model = _model()
    lora.apply_lora(model, LoraConfig(rank=4, alpha=16, targets="all-linear", rslora=True), rngs=nnx.Rngs(1))
    _randomize_b(model)
    tuned = model(_tokens())
    merged = lora.merge_lora(nnx.clone(model))
    assert not list(lora.lora_layers(merged))
    assert isinstance(merged.model.layers[0].self_attn.q_proj, nnx.Linear)
    np.testing.assert_allclose(merged(_tokens()), tuned, atol=2e-5)


def test_scale_is_alpha_over_rank_or_sqrt_rank():
    for rslora, scale in ((False, 2.0), (True, 8.0)):
        model = _model()
        lora.apply_lora(model, LoraConfig(rank=16, alpha=32, rslora=rslora), rngs=nnx.Rngs(1))
        _, layer = next(lora.lora_layers(model))
        assert layer.scale == scale
        x = jnp.ones((1, CFG.hidden_size))
        _randomize_b(model)
        delta = layer(x) - layer.base(x)
        np.testing.assert_allclose(delta, x @ layer.lora_a.get_value() @ layer.lora_b.get_value() * scale, rtol=1e-5)


def test_qlora_wraps_quantized_base_and_merges():
    model = _model()
    lora.quantize_base(model, QuantConfig(mode="nf4", block_size=32))
    lora.apply_lora(model, LoraConfig(rank=4, targets="q,v"), rngs=nnx.Rngs(1))
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.q_proj.base, QuantizedLinear)
    assert isinstance(attn.k_proj, QuantizedLinear)  # frozen, quantised, no adapter
    frozen_params = nnx.to_flat_state(nnx.state(model, nnx.All(nnx.Param, nnx.Not(lora.TRAINABLE))))
    assert not [p for p, _ in frozen_params if "layers" in p and p[-1] == "kernel"]  # no float kernels left
    _randomize_b(model)
    tuned = model(_tokens())
    merged = lora.merge_lora(nnx.clone(model))
    assert isinstance(merged.model.layers[0].self_attn.q_proj, nnx.Linear)
    np.testing.assert_allclose(merged(_tokens()), tuned, atol=2e-5)


def test_dropout_only_in_training_and_needs_rng():
    model = _model()
    lora.apply_lora(model, LoraConfig(rank=4, dropout=0.5), rngs=nnx.Rngs(params=1, dropout=2))
    _randomize_b(model)
    a, b = model(_tokens()), model(_tokens())
    assert float(jnp.abs(a - b).max()) > 0  # fresh dropout masks
    model.eval()
    np.testing.assert_array_equal(model(_tokens()), model(_tokens()))


def test_no_match_is_an_error():
    with pytest.raises(ValueError, match="matched no linear"):
        lora.apply_lora(nnx.Linear(4, 4, rngs=nnx.Rngs(0)), LoraConfig(), rngs=nnx.Rngs(0))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
