"""Training tokens/s of the Trainer's step on 1 vs 8 simulated CPU devices, per sharding strategy.

    bazel run //reactor:bench_scale
    bazel run //reactor:bench_scale -- --model=tiny --batch_size=16 --seq_len=128 --steps=10 --full

The step is the Trainer's own (state.place_on_mesh + step.make_train_step: in/out shardings,
sharded batches, activation rules) on a randomly initialised preset with LoRA (or full
fine-tuning with --full), a fixed random batch, the first steps (compilation) untimed and
the median of the timed ones reported. Rows: the plain single-device jit the Trainer used
before meshes ("no mesh"), then each strategy on a 1-device mesh and on 8 devices.

The 8 devices are simulated (--xla_force_host_platform_device_count=8): they share this
machine's CPU cores: the table shows the cost of sharding (collectives, partitioned
programs), not a speed-up. (XLA:CPU runs each device's program on its own thread, so 8
simulated devices can use more of the cores than one; that is not scaling either.) Real
speed-ups need real accelerators (GPU/TPU hosts, see reactor_core/dist/multihost.py).
"vs 1 device": the 8-device row against the same strategy on one device; the 1-device
rows against the plain jit.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import math
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "tiny", "Model preset, randomly initialised (reactor_core.models.config.PRESETS).")
flags.DEFINE_integer("batch_size", 16, "Rows per step (a multiple of data x fsdp = 8).")
flags.DEFINE_integer("seq_len", 128, "Tokens per row.")
flags.DEFINE_integer("steps", 8, "Timed steps per configuration.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (the first compiles).")
flags.DEFINE_bool("full", False, "Full fine-tuning instead of LoRA (rank 16 on all linears).")

# (strategy, 8-device --mesh); each is also run on a 1-device mesh of the same strategy.
CONFIGS = (
    ("dp", "data:8,fsdp:1,tensor:1"),
    ("fsdp", "data:1,fsdp:8,tensor:1"),
    ("fsdp", "data:2,fsdp:4,tensor:1"),
    ("fsdp_tp", "data:2,fsdp:2,tensor:2"),
)
ONE_DEVICE = "data:1,fsdp:1,tensor:1"


def _batch(config, batch_size: int, seq_len: int):
    import numpy as np

    from reactor_core.data import packing

    rng = np.random.default_rng(0)
    ids = [rng.integers(3, config.vocab_size, seq_len) for _ in range(batch_size)]
    rows, _ = packing.pad_examples(ids, [np.ones(seq_len, np.uint8)] * batch_size, seq_len)
    return {k: v[None] for k, v in rows.items()}  # (A=1, B, T)


def measure(strategy: str | None, mesh: str | None) -> dict:
    """Median seconds per step and tokens/s of one configuration (fresh model and state)."""
    import jax
    from flax import nnx

    from reactor_core.dist.mesh import MeshConfig
    from reactor_core.lora import lora as lora_lib
    from reactor_core.models.config import LlamaConfig
    from reactor_core.models.llama import Llama
    from reactor_core.train import objectives, optim
    from reactor_core.train import state as state_lib
    from reactor_core.train.config import LoraConfig, OptimConfig
    from reactor_core.train.step import make_train_step

    config = LlamaConfig.preset(FLAGS.model).replace(dtype="float32", param_dtype="float32")
    model = Llama(config, rngs=nnx.Rngs(0))
    if not FLAGS.full:
        lora_lib.apply_lora(model, LoraConfig(rank=16, targets="all-linear"), rngs=nnx.Rngs(1))
    split, params, rng = state_lib.split_model(model, use_lora=not FLAGS.full)
    tx, schedule = optim.build_optimizer(OptimConfig(warmup_steps=0), 1000)
    if mesh is None:
        state, frozen, placement = state_lib.init_state(params, rng, tx), split.frozen, None
    else:
        mesh_config = MeshConfig.parse(mesh, strategy=strategy)
        size = math.prod(getattr(mesh_config, axis) for axis in ("data", "fsdp", "tensor"))  # no -1 in CONFIGS
        placement, state, frozen, _ = state_lib.place_on_mesh(
            mesh_config, params, rng, split.frozen, None, tx, devices=jax.devices()[:size]
        )
    step = make_train_step(split, objectives.sft_objective, tx, schedule, placement)
    batch = _batch(config, FLAGS.batch_size, FLAGS.seq_len)
    for _ in range(FLAGS.warmup):
        state, metrics = step(state, frozen, None, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        state, metrics = step(state, frozen, None, batch)
        jax.block_until_ready(metrics)  # per-step sync: a median resists other load on a shared machine
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    devices = 1 if placement is None else placement.mesh.size
    return {"devices": devices, "seconds": seconds, "tokens_per_s": FLAGS.batch_size * FLAGS.seq_len / seconds}


def main(argv) -> None:
    del argv
    import jax

    if jax.device_count() < 8:
        raise SystemExit(f"bench_scale needs 8 (simulated) devices, found {jax.device_count()}: unset XLA_FLAGS")
    if FLAGS.batch_size % 8:
        raise SystemExit(f"--batch_size={FLAGS.batch_size} must be a multiple of 8 (the batch splits over 8 devices)")
    what = "full fine-tuning" if FLAGS.full else "LoRA r=16 all-linear"
    print(
        f"{FLAGS.model}, {what}, batch {FLAGS.batch_size} x {FLAGS.seq_len} tokens, float32, "
        f"median of {FLAGS.steps} steps; {os.cpu_count()} CPU cores"
    )
    print("NOTE: the 8 devices are simulated on the same CPU cores: these numbers show sharding OVERHEAD,")
    print("      not speed-up. Real scaling needs real GPUs/TPUs.\n")
    print(f"| {'strategy':<9} | {'mesh':<24} | devices | ms/step | tokens/s | vs 1 device |")
    print(f"|{'-' * 11}|{'-' * 26}|---------|---------|----------|-------------|")

    def row(strategy, mesh, r, base):
        print(
            f"| {strategy or '-':<9} | {mesh or 'no mesh (plain jit)':<24} | {r['devices']:>7} | "
            f"{r['seconds'] * 1e3:>7.1f} | {r['tokens_per_s']:>8.0f} | {r['tokens_per_s'] / base:>10.2f}x |",
            flush=True,
        )

    plain = measure(None, None)
    row(None, None, plain, plain["tokens_per_s"])
    for strategy, mesh in CONFIGS:
        one = measure(strategy, ONE_DEVICE)
        row(strategy, ONE_DEVICE, one, plain["tokens_per_s"])
        row(strategy, mesh, measure(strategy, mesh), one["tokens_per_s"])


if __name__ == "__main__":
    app.run(main)
