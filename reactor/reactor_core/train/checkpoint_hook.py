"""Local checkpoints as a hook: TrainState + data-iterator state every N steps, with Orbax.

The one module of the trainer that talks to Orbax; the sharded / GCS / preemption-aware
checkpointer replaces this hook without touching the loop. Layout under `directory`:
<step>/state (TrainState arrays) and <step>/data (iterator state JSON).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from reactor_core.train.hooks import Hook, Run


def _plain(tree):
    """Typed PRNG keys become their uint32 data (Orbax stores plain arrays)."""

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
        self._manager = None

    def start(self, run: Run) -> None:
        import orbax.checkpoint as ocp

        options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        run.outputs["checkpoints"] = self.directory

    def after_step(self, run: Run) -> None:
        import orbax.checkpoint as ocp

        data = run.train_batches.state() if hasattr(run.train_batches, "state") else {}
        args = ocp.args.Composite(state=ocp.args.StandardSave(_plain(run.state)), data=ocp.args.JsonSave(data))
        self._manager.save(run.step, args=args)

    def end(self, run: Run) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()


def restore_latest(directory: str, abstract_state):
    """(step, TrainState arrays (plain keys), iterator state) of the newest checkpoint, or None."""
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(_plain(abstract_state)), data=ocp.args.JsonRestore()),
        )
    return step, restored["state"], restored["data"]
