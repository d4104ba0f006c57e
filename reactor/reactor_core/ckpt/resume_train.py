"""A small stand-alone training run that checkpoints and resumes exactly (resume_kill_test's subject).

    python resume_train.py --ckpt_dir=DIR --log=LOSSES.txt --out=FINAL.npz --steps=16 --save_every=4

Tiny Llama + masked CE + AdamW; per-step RNG (token dropout on the loss mask) and a
restorable data iterator, so params, optimizer state, step, RNG and data position must all
come back exactly. Prints `resumed N`, `step N`, `save-started N` lines for the test to
time its kills; logs `step loss.hex()` per step. SIGTERM: finish the step, save
synchronously, exit EXIT_PREEMPTED.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from reactor_core.ckpt.checkpoint import CheckpointManager
from reactor_core.dist.preemption import EXIT_PREEMPTED, PreemptionWatcher
from reactor_core.dist.reference_train import init_params, masked_ce, synthetic_batches
from reactor_core.models.config import LlamaConfig


class BatchIterator:
    """Deterministic batches; its state is a small JSON dict (like reactor_core.data's iterators)."""

    def __init__(self, *, seed: int, batch_size: int, seq_len: int, vocab: int):
        self.seed, self.batch_size, self.seq_len, self.vocab, self.index = seed, batch_size, seq_len, vocab, 0

    def __next__(self):
        kw = dict(steps=1, batch_size=self.batch_size, seq_len=self.seq_len, vocab=self.vocab)
        batch = next(synthetic_batches(**kw, seed=self.seed, start=self.index))
        self.index += 1
        return batch

    def state(self) -> dict:
        return {"seed": self.seed, "index": self.index}

    def restore(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"data seed changed: checkpoint {state['seed']}, now {self.seed}")
        self.index = state["index"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt_dir", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--save_every", type=int, default=4)
    p.add_argument("--ballast_mb", type=int, default=0, help="extra state so saves take a while")
    args = p.parse_args()

    config = LlamaConfig.preset("tiny")
    run_config = {"model": "tiny", "lr": 1e-3, "batch": 4, "seq_len": 16, "seed": 0, "ballast_mb": args.ballast_mb}
    graphdef, params = init_params(config, seed=0)
    tx = optax.adamw(1e-3, weight_decay=0.01)

    def loss_fn(params, batch, rng):
        logits = nnx.merge(graphdef, params)(batch["tokens"][:, :-1])  # (B, T, V)
        keep = jax.random.bernoulli(rng, 0.9, batch["mask"].shape)  # (B, T)
        return masked_ce(logits, batch["tokens"][:, 1:], batch["mask"] * keep)

    @jax.jit
    def train_step(state, batch):
        rng, step_rng = jax.random.split(state["rng"])
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, step_rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = dict(state, params=optax.apply_updates(state["params"], updates), opt_state=opt_state)
        return dict(new, step=state["step"] + 1, rng=rng), loss

    state = {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.asarray(0, jnp.int32),
        "rng": jax.random.key(0),
    }
    # Random (incompressible) bytes that only ride along in the checkpoint.
    ballast = jax.random.uniform(jax.random.key(1), (args.ballast_mb * 2**18,))
    data = BatchIterator(seed=0, batch_size=4, seq_len=16, vocab=config.vocab_size)
    manager = CheckpointManager(args.ckpt_dir, keep=2, config=run_config)
    if manager.latest_step() is not None:
        restored, extra = manager.restore(dict(state, ballast=ballast))
        ballast = restored.pop("ballast")
        state = restored
        data.restore(extra["data"])
    done = int(state["step"])
    print(f"resumed {done}", flush=True)

    with PreemptionWatcher(poll_metadata=False) as watcher, open(args.log, "a") as log:
        while done < args.steps:
            state, loss = train_step(state, next(data))
            done += 1
            log.write(f"{done} {float(loss).hex()}\n")
            log.flush()
            print(f"step {done}", flush=True)
            if watcher.should_stop(done):
                manager.save(done, dict(state, ballast=ballast), {"data": data.state()}, force=True)
                manager.wait()  # synchronous: inside the ~30 s grace window
                print(f"preempted {done}", flush=True)
                manager.close()
                return EXIT_PREEMPTED
            if done % args.save_every == 0 and manager.save(done, dict(state, ballast=ballast), {"data": data.state()}):
                print(f"save-started {done}", flush=True)
    manager.save(done, dict(state, ballast=ballast), {"data": data.state()}, force=True)
    manager.close()
    leaves = jax.tree.leaves(jax.device_get(state["params"]))
    np.savez(args.out, *leaves)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
