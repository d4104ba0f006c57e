"""Hooks: everything the loop does besides stepping (logging, eval, checkpoints, plots).

The loop only steps and calls hooks:

    for hook in hooks: hook.start(run)
    while run.step < run.total_steps:
        run.state, metrics = train_step(...); run.step += 1     # dispatched, not yet computed
        for hook in hooks:
            if hook.due(run): hook.after_step(run)
        wait for the oldest step in flight -> every hook.on_step_finished(run, step)
    for hook in hooks: hook.end(run)

`after_step` runs when step N is dispatched (its outputs are still being computed;
run.state is step N's state, and a hook that reads it waits for it). `on_step_finished`
runs once step N's outputs are ready, in step order: what a progress display counts. At
most config.run.steps_in_flight steps are dispatched and unfinished at any time, so a
preemption notice is answered within about that many step times plus the save.

A hook with every_n_steps = N runs after steps N, 2N, ... and after the last step;
every_n_steps = 0 runs after the last step only. Host-side numbers a hook produces go
through `run.emit(step, metrics)`, which records them and hands them to every hook's
`on_metrics` (the JSONL, TensorBoard and progress-bar writers listen there).

Resume: a run restored from a checkpoint starts with run.step = run.resumed_from > 0, so
hooks see the restored step in start(). Preemption: after the step in progress every
hook's `on_preempt` runs (the checkpoint hook saves synchronously, the metrics hook flushes
its partial window), then every `end`, then the trainer raises Preempted.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any


class Hook:
    every_n_steps: int = 1

    def due(self, run: Run) -> bool:
        n = self.every_n_steps
        return run.step == run.total_steps or (n > 0 and run.step % n == 0)

    def start(self, run: Run) -> None:
        pass

    def after_step(self, run: Run) -> None:
        pass

    def on_step_finished(self, run: Run, step: int) -> None:
        """Step `step` has finished computing (run.pace has its timing); called in step order."""

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_preempt(self, run: Run) -> None:
        """The run stops after this step (SIGTERM / metadata notice); called before end()."""

    def end(self, run: Run) -> None:
        pass


class Preempted(Exception):
    """Training stopped early on a preemption notice, after saving a checkpoint.

    `bazel run //reactor:train` turns it into exit code EXIT_PREEMPTED (143); running the
    same command again resumes from `checkpoint_step` in `checkpoint_dir`.
    """

    def __init__(self, step: int, reason: str, checkpoint_dir: str | None, checkpoint_step: int | None):
        self.step, self.reason = step, reason
        self.checkpoint_dir, self.checkpoint_step = checkpoint_dir, checkpoint_step
        if checkpoint_step is None:
            saved = "no checkpoint saved (checkpoint.every_n_steps is 0): a restart begins from step 0"
        else:
            saved = f"checkpoint step {checkpoint_step} saved in {checkpoint_dir}; run again to resume"
        super().__init__(f"preempted after step {step} ({reason}); {saved}")


@dataclasses.dataclass
class Run:
    """What hooks can see and change. `state` is the current TrainState (on device)."""

    config: Any  # TrainingConfig
    output_dir: str
    total_steps: int
    state: Any
    split: Any  # state.SplitModel
    reference: Any = None  # DPO reference weights, when separate
    train_batches: Any = None  # the data iterator (state() / restore() for resume)
    placement: Any = None  # state.Placement: the mesh and every array's NamedSharding
    hooks: list = dataclasses.field(default_factory=list)
    step: int = 0
    resumed_from: int = 0  # the checkpoint step this run was restored from (0: a fresh start)
    preempted: str | None = None  # why the run stops early (set before on_preempt hooks run)
    tokens_seen: int = 0
    pending: list = dataclasses.field(default_factory=list)  # device metrics since the last log
    history: list = dataclasses.field(default_factory=list)  # every emitted record
    started: float = dataclasses.field(default_factory=time.perf_counter)
    pace: Any = None  # pace.Pace: finished steps and their measured times (set by the trainer)
    paused_s: float = 0.0  # time hooks spent off the training path (eval, checkpoints)
    outputs: dict = dataclasses.field(default_factory=dict)  # name -> path, filled by hooks and the trainer

    def emit(self, step: int, metrics: dict[str, float]) -> None:
        self.history.append({"step": step, **metrics})
        for hook in self.hooks:
            hook.on_metrics(self, step, metrics)

    def latest(self, key: str):
        for record in reversed(self.history):
            if key in record:
                return record[key]
        return None
