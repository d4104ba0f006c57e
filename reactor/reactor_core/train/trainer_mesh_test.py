"""The Trainer on a device mesh: 8 simulated CPU devices (XLA_FLAGS from the BUILD target).

For each strategy (dp data:8, fsdp data:2,fsdp:4, fsdp_tp data:2,fsdp:2,tensor:2), LoRA
and full fine-tuning runs of a few steps match one device: per-step losses within rtol
2e-5 (up to 2.6e-7 seen) and the final trained params within PARAM_ATOL (float32; only
the order of cross-device sums differs). Every array sits where the checked-in tables
say, as placed by the Trainer and still after the steps: full fine-tuning params are
dist/sharding_expected.json (same model, same meshes); LoRA adapters, the frozen base
and a QLoRA base are trainer_mesh_expected.json. A 1-device mesh is bit-identical to the
plain jit the Trainer used before meshes.
"""

import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # run directly
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from reactor_core.data import packing
from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.dist import sharding as sharding_lib
from reactor_core.dist.mesh import MeshConfig
from reactor_core.lora import lora as lora_lib
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train import objectives, optim, testing_data
from reactor_core.train import state as state_lib
from reactor_core.train.config import LoraConfig, OptimConfig, QuantConfig, TrainingConfig
from reactor_core.train.hooks import Hook
from reactor_core.train.step import make_train_step
from reactor_core.train.trainer import Trainer

HERE = pathlib.Path(__file__).parent
FULL_EXPECTED = HERE.parent / "dist" / "sharding_expected.json"
EXPECTED = HERE / "trainer_mesh_expected.json"
MESHES = {
    "dp": "data:8,fsdp:1,tensor:1",
    "fsdp": "data:2,fsdp:4,tensor:1",
    "fsdp_tp": "data:2,fsdp:2,tensor:2",
}
MODES = {"lora": {"use_lora": True, "lora_targets": "all-linear"}, "full": {"use_lora": False, "lr": 1e-3}}
# LoRA's B starts at 0, so A's first gradients are ~0 and Adam's m / sqrt(v) magnifies their
# reduction-order noise: up to ~1.3e-5 seen, bounded at 0.5% of one step (lr 1e-2).
PARAM_ATOL = {"lora": 5e-5, "full": 1e-6}  # full: up to 1.2e-7 seen (lr 1e-3)
STEPS = 3


class Capture(Hook):
    """At the end of the run: the trained params (host copies) and where every array lives."""

    every_n_steps = 0

    def end(self, run):
        self.params = jax.device_get(run.state.params)
        self.shardings = sharding_lib.describe(jax.tree.map(lambda x: x.sharding, run.state.params))
        self.mu = sharding_lib.describe(jax.tree.map(lambda x: x.sharding, run.state.opt_state[1][0].mu))
        self.frozen = sharding_lib.describe(jax.tree.map(lambda x: x.sharding, run.split.frozen))
        self.step_sharding = run.state.step.sharding


@functools.cache
def _data(tmp: str) -> str:
    return testing_data.write_chat(os.path.join(tmp, "train.jsonl"), n=48)


def _train(tmp, mode, mesh, strategy, devices=None):
    kwargs = testing_data.tiny_config_kwargs(
        str(tmp),
        steps=STEPS,
        log_every=1,
        seq_len=32,
        eval_fraction=0.0,
        plot=False,
        mesh=mesh,
        mesh_strategy=strategy,
        **MODES[mode],
    )
    capture = Capture()
    trainer = Trainer(TrainingConfig(**kwargs), tokenizer=tiny_tokenizer(), hooks=[capture], devices=devices)
    result = trainer.train(_data(str(tmp.parent)))
    losses = [r["train/loss"] for r in result.history if "train/loss" in r]
    return losses, capture, trainer


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    one = jax.devices()[:1]
    runs = {}
    for mode in MODES:
        losses, capture, _ = _train(tmp_path_factory.mktemp(f"one_{mode}"), mode, "data:1,fsdp:1,tensor:1", "fsdp", one)
        runs[mode] = (losses, capture.params)
    return runs


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("strategy", sorted(MESHES))
def test_mesh_run_matches_one_device_and_tables(strategy, mode, single_device, tmp_path_factory):
    assert jax.device_count() == 8
    ref_losses, ref_params = single_device[mode]
    losses, capture, trainer = _train(tmp_path_factory.mktemp(f"{strategy}_{mode}"), mode, MESHES[strategy], strategy)
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(capture.params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, atol=PARAM_ATOL[mode])

    assert dict(trainer.placement.mesh.shape) == MeshConfig.parse(MESHES[strategy], strategy=strategy).resolve(8)
    if mode == "full":
        expected = json.loads(FULL_EXPECTED.read_text())[strategy]
    else:
        expected = json.loads(EXPECTED.read_text())[strategy]["lora_params"]
        assert capture.frozen == json.loads(EXPECTED.read_text())[strategy]["lora_frozen"]
    # What the Trainer asked for, and where the arrays really are after the steps.
    assert trainer.placement.describe()["params"] == expected
    assert capture.shardings == expected
    assert capture.mu == expected  # Adam's first moment follows its parameter
    assert capture.step_sharding.spec == P()


def test_qlora_base_is_placed_and_quantised_arrays_replicated():
    """QLoRA's packed NF4 codes have no logical names: replicated; the rest follows the rules."""
    model = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    lora_lib.quantize_base(model, QuantConfig(mode="nf4", block_size=32))
    lora_lib.apply_lora(model, LoraConfig(rank=8, targets="all-linear"), rngs=nnx.Rngs(1))
    split, params, rng = state_lib.split_model(model, use_lora=True)
    tx, _ = optim.build_optimizer(OptimConfig(), 10)
    mesh_config = MeshConfig.parse(MESHES["fsdp_tp"], strategy="fsdp_tp")
    placement, _, frozen, _ = state_lib.place_on_mesh(mesh_config, params, rng, split.frozen, None, tx)
    actual = sharding_lib.describe(jax.tree.map(lambda x: x.sharding, frozen))
    assert actual == placement.describe()["frozen"] == json.loads(EXPECTED.read_text())["fsdp_tp"]["qlora_frozen"]
    assert any(k.endswith(".q.codes") and v == [] for k, v in actual.items())


def test_batch_size_must_divide_over_data_and_fsdp(tmp_path):
    kwargs = testing_data.tiny_config_kwargs(
        str(tmp_path), batch_size=6, mesh="data:2,fsdp:2,tensor:2", mesh_strategy="fsdp_tp"
    )
    with pytest.raises(ValueError, match=r"batch_size=6 is not divisible by data x fsdp = 4 of the mesh data:2"):
        Trainer(TrainingConfig(**kwargs), tokenizer=tiny_tokenizer()).train(_data(str(tmp_path)))


def test_one_device_mesh_is_bit_identical_to_plain_jit():
    """A 1x1x1 mesh (what a single-device machine gets) changes no number."""
    config = LlamaConfig.preset("tiny").replace(num_layers=1, dtype="float32", param_dtype="float32")  # fast compiles
    model = Llama(config, rngs=nnx.Rngs(0))
    lora_lib.apply_lora(model, LoraConfig(rank=4), rngs=nnx.Rngs(1))
    split, params, rng = state_lib.split_model(model, use_lora=True)
    tx, schedule = optim.build_optimizer(OptimConfig(warmup_steps=0, learning_rate=1e-2), 10)
    rng_np = np.random.default_rng(0)
    ids = [rng_np.integers(3, 256, n) for n in (16, 9, 12, 5)]
    rows, _ = packing.pad_examples(ids, [np.ones(len(x), np.uint8) for x in ids], 16)
    batch = jax.tree.map(lambda x: x[None], rows)  # (A=1, B=4, T=16)
    plain = make_train_step(split, objectives.sft_objective, tx, schedule)
    state = state_lib.init_state(params, rng, tx)
    s_plain, m_plain = plain(jax.tree.map(jnp.copy, state), split.frozen, None, batch)

    mesh_config = MeshConfig.parse("data:1,fsdp:1,tensor:1")
    placement, state, frozen, _ = state_lib.place_on_mesh(
        mesh_config, params, rng, split.frozen, None, tx, devices=jax.devices()[:1]
    )
    on_mesh = make_train_step(split, objectives.sft_objective, tx, schedule, placement)
    s_mesh, m_mesh = on_mesh(state, frozen, None, batch)
    for key in m_plain:
        np.testing.assert_array_equal(m_mesh[key], m_plain[key], err_msg=key)
    for a, b in zip(jax.tree.leaves(s_mesh.params), jax.tree.leaves(s_plain.params), strict=True):
        np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
