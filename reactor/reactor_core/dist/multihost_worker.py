"""One process of multihost_test: joins a localhost jax.distributed job and trains the tiny model.

    python multihost_worker.py --coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I --out=DIR
"""

import argparse
import json
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--num_processes", type=int, required=True)
    p.add_argument("--process_id", type=int, required=True)
    p.add_argument("--devices_per_process", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--notice_at", type=int, default=-1, help="process 1 gets a preemption notice after this step")
    p.add_argument("--ckpt_dir", default="")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices_per_process}"

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from reactor_core.dist import multihost
    from reactor_core.dist.mesh import MeshConfig, make_mesh
    from reactor_core.dist.preemption import PreemptionWatcher
    from reactor_core.dist.reference_train import ShardedRun, synthetic_batches
    from reactor_core.models.config import LlamaConfig

    cfg = multihost.DistributedConfig(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout_s=120,
    )
    assert multihost.initialize(cfg) == args.num_processes
    assert jax.device_count() == args.num_processes * args.devices_per_process

    config = LlamaConfig.preset("tiny")
    mesh = make_mesh(MeshConfig.parse("data:2,fsdp:-1,tensor:1"))
    run = ShardedRun.create(config, mesh=mesh, strategy="fsdp")
    watcher = PreemptionWatcher(signals=(), poll_metadata=False)
    losses, stopped_at = [], None
    batches = synthetic_batches(steps=args.steps, batch_size=8, seq_len=16, vocab=config.vocab_size)
    for step, batch in enumerate(batches):
        losses.append(float(run.step(batch)))
        if step == args.notice_at and jax.process_index() == 1:
            watcher.trigger("test notice on process 1")
        if watcher.should_stop(step):
            stopped_at = step
            break
    params = multihost_utils.process_allgather(run.params, tiled=True)
    result = {"losses": losses, "stopped_at": stopped_at, "process_count": jax.process_count()}

    if args.ckpt_dir:
        from reactor_core.ckpt.checkpoint import CheckpointManager

        state = {"params": run.params, "opt_state": run.opt_state}
        with CheckpointManager(args.ckpt_dir, keep=2, config={"model": "tiny"}) as manager:
            manager.save(len(losses), state, {"data": {"next": len(losses)}}, force=True)
            manager.wait()
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
            restored, extra = manager.restore(abstract)
        same = jax.tree.map(lambda a, b: bool((np.asarray(multihost_utils.process_allgather(a, tiled=True))
                                               == np.asarray(multihost_utils.process_allgather(b, tiled=True))).all()),
                            restored, state)
        result["ckpt_roundtrip"] = all(jax.tree.leaves(same))
        result["ckpt_extra"] = extra
        try:  # gs:// stages per host: refused with several processes, saying what to do instead
            CheckpointManager("gs://bucket/run", config={"model": "tiny"})
        except NotImplementedError as e:
            result["gcs_refusal"] = str(e)

    np.savez(os.path.join(args.out, f"params_{args.process_id}.npz"), *[np.asarray(x) for x in jax.tree.leaves(params)])
    with open(os.path.join(args.out, f"result_{args.process_id}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
