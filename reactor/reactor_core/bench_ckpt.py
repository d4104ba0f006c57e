"""Checkpoint and sharding benchmarks; prints tables (numbers, not pass/fail).

    bazel run //reactor:bench_ckpt                              # everything
    bazel run //reactor:bench_ckpt -- --fraction=0.25 --skip_train
    bazel run //reactor:bench_ckpt -- --skip_ckpt --train_steps=5

1. Checkpoints of a SmolLM2-135M-sized training state (params + AdamW mu/nu, float32:
   3 x 134.5M x 4 B = 1.61 GB; --fraction scales it): save and restore throughput to local
   disk and to a local GCS server (gcp-storage-emulator, upload/download included), and how
   long the training loop is blocked by an asynchronous save vs a synchronous one.
2. Training tokens/s of the tiny model on 1 device and on 8 simulated CPU devices per
   strategy (same global batch), each in its own subprocess with its own XLA_FLAGS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

STRATEGY_MESHES = {
    "dp": "data:8,fsdp:1,tensor:1",
    "fsdp": "data:1,fsdp:8,tensor:1",
    "fsdp_tp": "data:1,fsdp:4,tensor:2",
}


# ---- 1. checkpoints ----


def smollm2_like_state(fraction: float):
    """{"params", "mu", "nu"}: SmolLM2-135M shapes (vocab rows scaled by `fraction`), random float32."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from reactor_core.models.config import LlamaConfig
    from reactor_core.models.llama import Llama

    config = LlamaConfig.preset("smollm2-135m")
    layers = max(1, round(config.num_layers * fraction))
    config = config.replace(num_layers=layers)
    abstract = nnx.state(nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0))), nnx.Param).to_pure_dict()
    leaves, treedef = jax.tree.flatten(abstract)
    keys = jax.random.split(jax.random.key(0), 3 * len(leaves))

    def fill(offset):
        arrays = [jax.random.normal(keys[offset + i], x.shape, jnp.float32) for i, x in enumerate(leaves)]
        return jax.tree.unflatten(treedef, arrays)

    state = {"params": fill(0), "mu": fill(len(leaves)), "nu": fill(2 * len(leaves)), "step": jnp.asarray(1000)}
    jax.block_until_ready(state)
    return state, layers


def _nbytes(tree) -> int:
    import jax

    return sum(x.nbytes for x in jax.tree.leaves(tree))


def _abstract(tree):
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def bench_checkpoint(state, root: str, *, gcs_url: str | None = None) -> dict:
    """Sync save, async save (blocking part + total), restore (fresh machine for gs://)."""
    import jax

    from reactor_core.ckpt.checkpoint import CheckpointManager

    gb = _nbytes(state) / 1e9
    where = gcs_url or root
    kw = dict(keep=1, config={"bench": True})
    if gcs_url:
        kw["staging_dir"] = os.path.join(root, "staging-sync")
    out = {"gb": gb}
    with CheckpointManager(os.path.join(where, "sync"), async_save=False, **kw) as m:
        start = time.monotonic()
        m.save(1, state, {"i": 1})
        m.wait()
        out["sync_s"] = time.monotonic() - start
    if gcs_url:
        kw["staging_dir"] = os.path.join(root, "staging-async")
    with CheckpointManager(os.path.join(where, "async"), async_save=True, **kw) as m:
        start = time.monotonic()
        m.save(1, state, {"i": 1})
        out["async_block_s"] = m.last_save_blocking_s
        m.wait()
        out["async_total_s"] = time.monotonic() - start
    if gcs_url:
        kw["staging_dir"] = os.path.join(root, "staging-fresh")  # empty disk: download first
    start = time.monotonic()
    with CheckpointManager(os.path.join(where, "async"), **kw) as m:
        restored, _ = m.restore(_abstract(state))
        jax.block_until_ready(restored)
    out["restore_s"] = time.monotonic() - start
    del restored
    return out


def checkpoint_table(fraction: float, gcs_fraction: float) -> str:
    import jax

    from reactor_core.ckpt.gcs_emulator import LocalGcs

    rows = []
    state, layers = smollm2_like_state(fraction)
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as root:
        rows.append(("local disk", layers, bench_checkpoint(state, root)))
    if gcs_fraction != fraction:
        del state
        state, layers = smollm2_like_state(gcs_fraction)
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_gcs_") as root, LocalGcs(bucket="bench"):
        rows.append(("GCS emulator", layers, bench_checkpoint(state, root, gcs_url="gs://bench/run")))
    del state
    jax.clear_caches()

    lines = [
        "| target | layers | state GB | sync save GB/s | async: loop blocked s | sync save s | blocked / sync "
        "| async total s | restore GB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, layers, r in rows:
        lines.append(
            f"| {name} | {layers} | {r['gb']:.2f} | {r['gb'] / r['sync_s']:.2f} | {r['async_block_s']:.3f} | "
            f"{r['sync_s']:.2f} | {100 * r['async_block_s'] / r['sync_s']:.1f}% | {r['async_total_s']:.2f} | "
            f"{r['gb'] / r['restore_s']:.2f} |"
        )
    return "\n".join(lines)


# ---- 2. training throughput per strategy ----


def train_worker(devices: int, strategy: str | None, steps: int, batch: int, seq: int) -> dict:
    """Runs in a subprocess whose XLA_FLAGS already set the device count."""
    import jax

    from reactor_core.dist.mesh import MeshConfig, make_mesh
    from reactor_core.dist.reference_train import ShardedRun, synthetic_batches
    from reactor_core.models.config import LlamaConfig

    assert jax.device_count() == devices, (jax.device_count(), devices)
    config = LlamaConfig.preset("tiny")
    mesh = make_mesh(MeshConfig.parse(STRATEGY_MESHES[strategy], strategy=strategy)) if strategy else None
    run = ShardedRun.create(config, mesh=mesh, strategy=strategy or "dp")
    batches = list(synthetic_batches(steps=steps + 1, batch_size=batch, seq_len=seq, vocab=config.vocab_size))
    run.step(batches[0]).block_until_ready()  # compile
    start = time.monotonic()
    for b in batches[1:]:
        loss = run.step(b)
    loss.block_until_ready()
    elapsed = time.monotonic() - start
    return {"tokens_per_s": steps * batch * seq / elapsed, "step_ms": 1000 * elapsed / steps}


def train_table(steps: int, batch: int, seq: int) -> str:
    cases = [("1 device", 1, None)] + [(f"8 devices, {s} ({STRATEGY_MESHES[s]})", 8, s) for s in STRATEGY_MESHES]
    lines = ["| run | tokens/s | ms/step |", "|---|---:|---:|"]
    for name, devices, strategy in cases:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        cmd = [sys.executable, os.path.abspath(__file__), "--_worker", f"--devices={devices}"]
        cmd += [f"--strategy={strategy or ''}", f"--train_steps={steps}", f"--batch={batch}", f"--seq={seq}"]
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        lines.append(f"| {name} | {r['tokens_per_s']:.0f} | {r['step_ms']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fraction", type=float, default=1.0, help="share of SmolLM2's layers for the local-disk run")
    p.add_argument("--gcs_fraction", type=float, default=0.25, help="same for the GCS emulator (in memory)")
    p.add_argument("--train_steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="global batch (same for every device count)")
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--skip_ckpt", action="store_true")
    p.add_argument("--skip_train", action="store_true")
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        print(json.dumps(train_worker(args.devices, args.strategy or None, args.train_steps, args.batch, args.seq)))
        return 0
    if not args.skip_ckpt:
        print("Checkpoint save/restore (SmolLM2-135M-shaped params + AdamW mu/nu, float32)")
        print(checkpoint_table(args.fraction, args.gcs_fraction))
        print()
    if not args.skip_train:
        print(f"Training throughput, tiny model, global batch {args.batch} x {args.seq} tokens, CPU")
        print(train_table(args.train_steps, args.batch, args.seq))
    return 0


if __name__ == "__main__":
    sys.exit(main())
