"""Checkpoints as a hook: TrainState + data-iterator state every N steps and at the end.

Storage is reactor_core.ckpt.checkpoint (the one module that talks to Orbax and GCS):
local or gs:// directories, keep-last-N, atomic commits, the run's config hash. Each
step directory holds `state` (the TrainState pytree, PRNG keys as their uint32 data)
and `extra` ({"data": iterator state}).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from reactor_core.train.hooks import Hook, Run

# Fields that may change between a run and its resumption.
RESUMABLE_CHANGES = ("run.max_steps", "run.num_epochs", "run.progress", "run.log_every", "run.eval_every", "run.plot")


def plain_state(tree):
    """Typed PRNG keys become their uint32 data (checkpoints store plain arrays)."""

    def conv(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(conv, tree)


class Checkpoint(Hook):
    def __init__(self, directory: str, *, every_n_steps: int, keep: int):
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.manager = None

    def start(self, run: Run) -> None:
        from reactor_core.ckpt.checkpoint import CheckpointManager

        self.manager = CheckpointManager(
            self.directory, keep=self.keep, config=run.config.to_dict(), ignore_fields=RESUMABLE_CHANGES
        )
        run.outputs["checkpoints"] = self.directory

    def after_step(self, run: Run) -> None:
        jax.block_until_ready(run.state)  # finish queued training steps before timing the pause
        started = time.perf_counter()
        data = run.train_batches.state() if hasattr(run.train_batches, "state") else {}
        self.manager.save(run.step, plain_state(run.state), {"data": data})
        run.paused_s += time.perf_counter() - started

    def end(self, run: Run) -> None:
        if self.manager is not None:
            self.manager.close()


def restore_latest(directory: str, abstract_state, config=None):
    """(step, TrainState pytree with plain keys, extra dict) of the newest checkpoint, or None."""
    from reactor_core.ckpt.checkpoint import CheckpointManager

    with CheckpointManager(
        directory, config=config.to_dict() if config else None, ignore_fields=RESUMABLE_CHANGES
    ) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        state, extra = manager.restore(plain_state(abstract_state), step)
    return step, state, extra
