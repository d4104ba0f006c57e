"""Bounded run-ahead: a preemption notice is answered within the steps in flight, and the
progress bar counts finished steps only.

The training step is slow on purpose: the tiny model burns a fixed amount of compute inside
its forward pass (matmuls whose result is added as zero). JAX returns from a dispatch at once,
so a loop that does not wait would queue up to log_every steps ahead of the device; these
tests see that, kill tests with steps far shorter than a dispatch cannot. (A host callback
cannot slow the step instead: on CPU a program with one runs synchronously in the dispatch.)

Whether a step has finished is read from the arrays it returned (jax.Array.is_ready), not
from the trainer.

Run: bazel test //reactor:trainer_pace_test
"""

import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train import testing_data
from reactor_core.train.config import TrainingConfig
from reactor_core.train.hooks import Hook, Preempted
from reactor_core.train.metrics_hooks import ProgressBar
from reactor_core.train.trainer import Trainer

BURN = 96  # (384, 384) matmuls per forward pass: a step of ~0.2-1 s on a CI core


class SlowLlama(Llama):
    """The tiny Llama with a fixed extra cost inside every forward pass (so inside the step)."""

    def __call__(self, tokens, **kwargs):
        logits = super().__call__(tokens, **kwargs)
        seed = jax.lax.stop_gradient(tokens[0, 0]).astype(jnp.float32)
        m = jnp.full((384, 384), 1e-3, jnp.float32) * seed
        m = jax.lax.fori_loop(0, BURN, lambda _, m: jnp.tanh(m @ m + 1e-3), m)
        return logits + 0.0 * m[0, 0]  # XLA keeps x * 0 for floats (x may be inf or nan)


class Watch(Hook):
    """Keeps each step's metrics (its last outputs) to tell, from outside, which steps finished."""

    def __init__(self):
        self.outputs: list = []  # index k-1: step k's metrics, on device
        self.bar: ProgressBar | None = None
        self.started = threading.Event()

    def start(self, run):
        self.bar = next(h for h in run.hooks if isinstance(h, ProgressBar))
        self.started.set()

    def after_step(self, run):  # every step, at dispatch
        # The step's metrics; on a step the metrics hook logged (it takes them), its new state.
        self.outputs.append(run.pending[-1] if run.pending else run.state)

    def finished(self) -> int:
        done = 0
        for metrics in list(self.outputs):
            if not all(x.is_ready() for x in jax.tree.leaves(metrics)):
                break
            done += 1
        return done


def _trainer(tmp_path, hooks=(), **overrides) -> tuple[Trainer, str]:
    data = testing_data.write_chat(str(tmp_path / "train.jsonl"), n=64)
    kw = testing_data.tiny_config_kwargs(str(tmp_path), eval_fraction=0.0, plot=False, **overrides)
    model = SlowLlama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    return Trainer(TrainingConfig(**kw), model=model, tokenizer=tiny_tokenizer(), hooks=hooks), data


class NoticeDuring(Watch):
    """Sends this process SIGTERM shortly after step `step` was dispatched, from another thread
    (as a spot VM's notice arrives: whenever it likes, typically while the loop waits)."""

    def __init__(self, step: int, delay_s: float):
        super().__init__()
        self.step, self.delay_s = step, delay_s
        self.finished_at_notice = None
        self.sent_at = None

    def after_step(self, run):
        super().after_step(run)
        if run.step == self.step:
            threading.Timer(self.delay_s, self._send).start()

    def _send(self):
        self.finished_at_notice = self.finished()
        self.sent_at = time.perf_counter()
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_sigterm_during_slow_steps_saves_within_the_steps_in_flight(tmp_path, in_flight):
    notice = NoticeDuring(step=3, delay_s=0.05)
    # log_every=10: the loop before the bound synced only there, so at the notice it had every
    # step up to 10 queued and saved step 10, however long those took.
    trainer, data = _trainer(tmp_path, hooks=[notice], steps=14, log_every=10, checkpoint_every=100,
                             steps_in_flight=in_flight)  # fmt: skip
    with pytest.raises(Preempted) as info:
        trainer.train(data)
    waited = time.perf_counter() - notice.sent_at
    saved, done = info.value.checkpoint_step, notice.finished_at_notice
    assert info.value.reason == "signal SIGTERM"
    # The bound, in steps: at most the steps in flight at the notice ran before the save.
    assert done is not None and saved <= done + in_flight, (saved, done, in_flight)
    assert len(notice.outputs) == saved  # nothing was dispatched past the checkpoint
    print(f"in_flight={in_flight}: {done} steps finished at the notice, checkpoint of step {saved} "
          f"committed {waited:.2f}s after it")  # fmt: skip


def test_progress_bar_counts_finished_steps_only(tmp_path):
    steps = 10
    watch = Watch()
    seen: list[tuple[int, int]] = []  # (bar count, steps finished), sampled while training
    stop = threading.Event()

    def sample():
        watch.started.wait(300)
        while not stop.is_set():
            count = watch.bar.count  # read first: `finished` only grows, so the check is fair
            seen.append((count, watch.finished()))
            time.sleep(0.005)

    class AtEveryUpdate(Hook):  # runs right after the bar moved (hooks run in order)
        every_n_steps = 0
        updates: list[tuple[int, int, bool]] = []

        def on_step_finished(self, run, step):
            self.updates.append((step, watch.bar.count, watch.finished() >= step))

    trainer, data = _trainer(tmp_path, hooks=[watch, AtEveryUpdate()], steps=steps, log_every=100, progress=True)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = trainer.train(data)
    finally:
        stop.set()
        sampler.join(10)
    assert result.steps == steps and watch.bar.count == steps
    updates = AtEveryUpdate.updates
    assert [u[0] for u in updates] == list(range(1, steps + 1))
    assert all(count == step and ready for step, count, ready in updates), updates
    assert seen and all(count <= done for count, done in seen), [s for s in seen if s[0] > s[1]][:5]
    # The same pace figures reach metrics.jsonl (and TensorBoard): measured, not dispatched.
    last = result.history[-1]
    assert last["train/step_s"] > 0 and last["train/tokens_per_sec"] > 0 and last["train/first_step_s"] > 0
    assert last["train/eta_s"] >= 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
