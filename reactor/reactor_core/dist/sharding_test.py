"""Sharded training on 8 simulated CPU devices matches one device, for every strategy.

Tolerance: per-step losses within rtol 2e-5 and final params within atol 5e-5 of the
single-device run (float32; only the order of cross-device reductions differs).
"""

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import json
import pathlib

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from reactor_core.dist import sharding as sharding_lib
from reactor_core.dist.mesh import MeshConfig, make_mesh
from reactor_core.dist.reference_train import ShardedRun, init_params, synthetic_batches
from reactor_core.models.config import LlamaConfig

EXPECTED = pathlib.Path(__file__).with_name("sharding_expected.json")
MESHES = {
    "dp": "data:8,fsdp:1,tensor:1",
    "fsdp": "data:2,fsdp:4,tensor:1",
    "fsdp_tp": "data:2,fsdp:2,tensor:2",
}
CONFIG = LlamaConfig.preset("tiny")
STEPS, BATCH, SEQ = 3, 8, 16


def _batches():
    return list(synthetic_batches(steps=STEPS, batch_size=BATCH, seq_len=SEQ, vocab=CONFIG.vocab_size))


def _train(mesh=None, strategy="fsdp"):
    run = ShardedRun.create(CONFIG, mesh=mesh, strategy=strategy)
    losses = [float(run.step(b)) for b in _batches()]
    return run, losses


@pytest.fixture(scope="module")
def single_device():
    run, losses = _train()
    return jax.device_get(run.params), losses


@pytest.mark.parametrize("strategy", sorted(MESHES))
def test_strategy_matches_single_device_and_expected_table(strategy, single_device):
    ref_params, ref_losses = single_device
    mesh = make_mesh(MeshConfig.parse(MESHES[strategy], strategy=strategy))
    run, losses = _train(mesh, strategy)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(jax.device_get(run.params)), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, atol=5e-5)

    # The params really live where the table says (not merely were asked to).
    actual = sharding_lib.describe(jax.tree.map(lambda x: x.sharding, run.params))
    expected = json.loads(EXPECTED.read_text())[strategy]
    assert actual == expected
    # Adam's mu/nu follow the params; the step count is replicated.
    opt = run.opt_state[0]
    assert sharding_lib.describe(jax.tree.map(lambda x: x.sharding, opt.mu)) == expected
    assert opt.count.sharding.spec == P()


def test_batch_sharding_splits_over_data_and_fsdp():
    mesh = make_mesh(MeshConfig.parse("data:2,fsdp:2,tensor:2", strategy="fsdp_tp"))
    batch = sharding_lib.shard_batch(next(synthetic_batches(steps=1, batch_size=8, seq_len=4, vocab=16)), mesh)
    assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)
    assert batch["tokens"].addressable_shards[0].data.shape == (2, 5)
    with pytest.raises(ValueError, match="not divisible by data x fsdp = 4"):
        sharding_lib.shard_batch({"tokens": np.zeros((6, 4), np.int32)}, mesh)
    # Gradient accumulation: (A, B, T) batches split along B.
    accum = sharding_lib.shard_batch({"chosen": {"ids": np.zeros((3, 8, 4), np.int32)}}, mesh, batch_axis=1)
    assert accum["chosen"]["ids"].sharding.spec == P(None, ("data", "fsdp"), None)


def test_indivisible_dims_stay_replicated():
    mesh = make_mesh(MeshConfig.parse("fsdp:8"))
    spec = sharding_lib.logical_to_spec(("vocab", "embed"), sharding_lib.RULES["fsdp"], shape=(10, 12), mesh=mesh)
    assert spec == P()
    spec = sharding_lib.logical_to_spec(("vocab", "embed"), sharding_lib.RULES["fsdp"], shape=(10, 16), mesh=mesh)
    assert spec == P(None, "fsdp")


def test_opt_state_shardings_for_masked_optimizer():
    mesh = make_mesh(MeshConfig.parse("data:2,fsdp:2,tensor:2", strategy="fsdp_tp"))
    _, params = init_params(CONFIG)
    p_sh = sharding_lib.param_shardings(params, mesh, sharding_lib.RULES["fsdp_tp"])
    mask = jax.tree.map(lambda x: x.ndim == 2, params)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.masked(optax.adam(1e-3), mask))
    o_sh = sharding_lib.opt_state_shardings(jax.eval_shape(tx.init, params), params, p_sh, mesh)
    specs = {s.spec for s in jax.tree.leaves(o_sh)}
    assert P("fsdp", "tensor") in specs and P() in specs


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
