"""The jitted train step: exact gradient accumulation, adapter-only optimizer state, dtypes."""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.data import packing
from reactor_core.lora import lora
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train import objectives, optim
from reactor_core.train import state as state_lib
from reactor_core.train.config import LoraConfig, OptimConfig
from reactor_core.train.step import make_eval_step, make_train_step

CFG = LlamaConfig.preset("tiny")


def _rows(n, t=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(3, CFG.vocab_size, rng.integers(4, t + 1)) for _ in range(n)]
    masks = [np.ones(len(x), np.uint8) for x in ids]
    rows, _ = packing.pad_examples(ids, masks, t)
    return rows


@functools.cache
def _compiled(dtype):
    model = Llama(CFG.replace(dtype=dtype, param_dtype=dtype), rngs=nnx.Rngs(0))
    lora.apply_lora(model, LoraConfig(rank=4), rngs=nnx.Rngs(1))
    split, params, rng = state_lib.split_model(model, use_lora=True)
    tx, schedule = optim.build_optimizer(OptimConfig(warmup_steps=0, learning_rate=1e-2), 10)
    return split, state_lib.init_state(params, rng, tx), make_train_step(split, objectives.sft_objective, tx, schedule)


def _setup(dtype="float32"):
    """(split, a fresh copy of the initial state, the step); one compile per dtype and shape."""
    split, state, step = _compiled(dtype)
    return split, jax.tree.map(jnp.copy, state), step


def test_accumulation_equals_one_big_batch():
    rows = _rows(4)
    split, state, step = _setup()
    big = jax.tree.map(lambda x: x[None], rows)  # (1, 4, T)
    micro = jax.tree.map(lambda x: x.reshape(2, 2, *x.shape[1:]), rows)  # (2, 2, T)
    s1, m1 = step(jax.tree.map(jnp.copy, state), split.frozen, None, big)
    s2, m2 = step(jax.tree.map(jnp.copy, state), split.frozen, None, micro)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert int(s2.step) == 1 and float(m2["weight"]) == float(rows["weights"].sum())


def test_only_adapters_have_optimizer_state_and_change():
    split, state, step = _setup()
    n_adapter = state_lib.count_params(state.params)
    assert n_adapter == CFG.num_layers * sum(4 * (i + o) for i, o in ((64, 64), (64, 32), (64, 32), (64, 64)))
    mu = [x for x in jax.tree.leaves(state.opt_state) if x.ndim == 2]
    assert sum(x.size for x in mu) == 2 * n_adapter  # AdamW's mu and nu, adapters only
    frozen_before = jax.tree.map(np.asarray, split.frozen)
    new, metrics = step(state, split.frozen, None, jax.tree.map(lambda x: x[None], _rows(4)))
    assert np.isfinite(float(metrics["loss"]))
    for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(split.frozen)):
        np.testing.assert_array_equal(a, b)
    lora_b = [x for p, x in nnx.to_flat_state(new.params) if p[-1] == "lora_b"]
    assert any(float(jnp.abs(v.get_value()).max()) > 0 for v in lora_b)


def test_state_is_donated():
    split, state, step = _setup()
    leaf = jax.tree.leaves(state.params)[0]
    step(state, split.frozen, None, jax.tree.map(lambda x: x[None], _rows(4)))
    assert leaf.is_deleted()


def test_bfloat16_compute_keeps_float32_masters():
    split, state, step = _setup(dtype="bfloat16")
    base = [x for x in jax.tree.leaves(split.frozen) if x.ndim == 2]
    assert all(x.dtype == jnp.bfloat16 for x in base)
    new, metrics = step(state, split.frozen, None, jax.tree.map(lambda x: x[None], _rows(4)))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new.params))
    assert np.isfinite(float(metrics["loss"]))


def test_loss_decreases_and_eval_step_agrees():
    rows = jax.tree.map(lambda x: x[None], _rows(4))
    split, state, step = _setup()
    eval_step = make_eval_step(split, objectives.sft_objective)
    first = eval_step(state.params, state.rng, split.frozen, None, jax.tree.map(lambda x: x[0], rows))
    losses = []
    for _ in range(8):
        state, m = step(state, split.frozen, None, rows)
        losses.append(float(m["loss"]))
    assert losses[0] == pytest.approx(float(first["loss_sum"] / first["weight"]), rel=1e-5)
    assert losses[-1] < losses[0] - 0.1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
