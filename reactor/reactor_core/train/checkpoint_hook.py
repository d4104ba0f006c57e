"""Checkpoints as a hook: save TrainState + data-iterator state, and restore them to resume.

Storage is reactor_core.ckpt.checkpoint (the one module that talks to Orbax and GCS):
local or gs:// directories, keep-last-N, atomic commits, the run's config hash. Each
step directory holds `state` (the TrainState pytree, PRNG keys as their uint32 data)
and `extra` ({"data": iterator state, "tokens_seen": int}).

Saves: every N steps (asynchronous: the loop trains on while Orbax writes), at the last
step (forced), and on preemption (forced and synchronous, inside the ~30 s grace window).
Restore (`Checkpoint.restore`, called by the trainer before the hooks start): the newest
complete step goes back into run.state (same shardings as the freshly built state),
run.step, run.tokens_seen and the data iterator, so training continues bit for bit.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp

from reactor_core.ckpt import gcs
from reactor_core.train.hooks import Hook, Run

log = logging.getLogger("reactor_core.train")

# Fields that may change between a run and its resumption: loop length, logging, where
# outputs and checkpoints go (a fresh machine), and the mesh (Orbax restores into the new
# shardings). Everything else must match, or the resume is refused naming the fields.
RESUMABLE_CHANGES = (
    "run.max_steps",
    "run.num_epochs",
    "run.progress",
    "run.log_every",
    "run.steps_in_flight",
    "run.eval_every",
    "run.eval_batches",
    "run.plot",
    "run.export_merged",
    "run.force",
    "run.output_dir",
    "checkpoint",
    "mesh",
)


class ResumeRefused(ValueError):
    """The checkpoint directory holds a run but checkpoint.resume is off."""


def checkpoint_dir(config, output_dir: str) -> str:
    """config.checkpoint.dir, or <output_dir>/checkpoints; local paths absolute, gs:// URLs as given."""
    directory = config.checkpoint.dir or os.path.join(output_dir, "checkpoints")
    return directory if gcs.is_gcs_url(directory) else os.path.abspath(directory)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def plain_state(tree):
    """Typed PRNG keys become their uint32 data (checkpoints store plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def typed_state(template, plain):
    """The inverse of plain_state: `plain`'s leaves in `template`'s structure, keys re-typed."""
    leaves, treedef = jax.tree.flatten(template)
    restored = jax.tree.leaves(plain)
    if len(restored) != len(leaves):
        raise ValueError(f"checkpoint state has {len(restored)} arrays, this run's TrainState {len(leaves)}")
    out = [
        jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r
        for t, r in zip(leaves, restored, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


class Checkpoint(Hook):
    def __init__(self, directory: str, *, every_n_steps: int, keep: int, resume: bool = True):
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.resume = resume
        self.manager = None
        self.last_step: int | None = None  # the newest step saved or restored by this run

    def _open(self, run: Run) -> None:
        from reactor_core.ckpt.checkpoint import CheckpointManager

        if self.manager is None:
            self.manager = CheckpointManager(
                self.directory, keep=self.keep, config=run.config.to_dict(), ignore_fields=RESUMABLE_CHANGES
            )
            run.outputs["checkpoints"] = self.directory

    def restore(self, run: Run) -> int:
        """Loads the newest complete checkpoint into `run`; returns its step (0: none, a fresh start).

        Raises ConfigMismatchError (naming the fields) for an incompatible config and
        ResumeRefused when a checkpoint exists but checkpoint.resume is off.
        """
        self._open(run)
        try:
            return self._restore(run)
        except BaseException:
            self.manager.close()  # the run will not start: leave no Orbax threads behind
            self.manager = None
            raise

    def _restore(self, run: Run) -> int:
        step = self.manager.latest_step()
        if step is None:
            return 0
        if not self.resume:
            raise ResumeRefused(
                f"{self.directory} holds a checkpoint (step {step}) but checkpoint.resume is off. "
                "Continue that run with --checkpoint_resume (checkpoint_resume=True), or start over: "
                "delete it or choose another --checkpoint_dir / --output."
            )
        # Arrays of the fresh state carry the target shardings: Orbax restores each shard in place.
        state, extra = self.manager.restore(plain_state(run.state), step)
        run.state = typed_state(run.state, state)
        if int(run.state.step) != step:
            raise ValueError(f"{self.directory} step {step} holds TrainState.step={int(run.state.step)}")
        if "data" in extra and hasattr(run.train_batches, "restore"):
            run.train_batches.restore(extra["data"])
        run.step = run.resumed_from = self.last_step = step
        run.tokens_seen = int(extra.get("tokens_seen", 0))
        log.info("resumed from %s step %d of %d", self.directory, step, run.total_steps)
        return step

    def start(self, run: Run) -> None:
        self._open(run)

    def save(self, run: Run, *, force: bool = False) -> bool:
        """Starts saving the current step (asynchronously); False when it is already saved."""
        jax.block_until_ready(run.state)  # finish queued training steps before timing the pause
        started = time.perf_counter()
        data = run.train_batches.state() if hasattr(run.train_batches, "state") else {}
        extra = {"data": data, "tokens_seen": run.tokens_seen}
        saved = self.manager.save(run.step, plain_state(run.state), extra, force=force)
        run.paused_s += time.perf_counter() - started
        if saved:
            self.last_step = run.step
            log.info("checkpoint: saving step %d to %s", run.step, self.directory)
        return saved

    def after_step(self, run: Run) -> None:
        self.save(run, force=run.step >= run.total_steps)  # the final step is always kept

    def on_preempt(self, run: Run) -> None:
        started = time.perf_counter()
        self.save(run, force=True)  # (or this step's periodic save is already being written)
        log.warning("preempted: writing step %d to %s synchronously", run.step, self.directory)
        self.manager.wait()  # committed (and uploaded, for gs://) before the VM goes away
        self.last_step = run.step
        log.warning("preempted: step %d committed in %.2fs", run.step, time.perf_counter() - started)

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
