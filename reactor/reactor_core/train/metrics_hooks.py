"""Metric hooks: average the step metrics, write metrics.jsonl and TensorBoard, show progress."""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np

from reactor_core.train.hooks import Hook, Run
from reactor_core.train.pace import format_duration


class TrainMetrics(Hook):
    """Every N steps: fetches the steps' metrics once and emits their means as train/*.

    The pace figures (train/step_s, train/tokens_per_sec, train/eta_s, train/first_step_s:
    the first step of this process, compile included) are run.pace's, the progress bar's own.
    """

    def __init__(self, every_n_steps: int):
        self.every_n_steps = every_n_steps

    def after_step(self, run: Run) -> None:
        if not run.pending:
            return
        host = jax.device_get(run.pending)  # one transfer for all steps since the last log
        run.pending.clear()
        out = {}
        for key in host[0]:
            if key == "weight":
                continue
            out[f"train/{key}"] = float(np.mean([m[key] for m in host]))
        if "train/loss" in out and run.config.run.mode == "sft":
            out["train/perplexity"] = math.exp(min(out["train/loss"], 50.0))
        out["train/tokens"] = float(run.tokens_seen)
        out.update(run.pace.figures())
        if "train/tokens_per_sec" not in out:  # no step measured yet: the rate so far, compile included
            out["train/tokens_per_sec"] = run.pace.rate_so_far(time.perf_counter(), run.tokens_seen, run.paused_s)
        run.emit(run.step, out)

    def on_preempt(self, run: Run) -> None:
        # The steps since the last log would be lost with the process: log them now.
        # (After the resume, the next record averages only the steps after the checkpoint.)
        self.after_step(run)


class JsonlWriter(Hook):
    """Appends every emitted record to <output_dir>/metrics.jsonl.

    A fresh run starts the file anew. A resumed run (run.resumed_from = C > 0) keeps the
    records of steps <= C and appends: records of steps after C were written by the killed
    process after its last checkpoint and are dropped, because this run re-does those steps.
    So the file holds one record per logged step, as an unbroken run's would. The kept
    records also go back into run.history (the TrainResult sees the whole run).
    """

    every_n_steps = 0

    def __init__(self, path: str):
        self.path = path
        self._file = None

    def start(self, run: Run) -> None:
        if run.resumed_from > 0 and os.path.exists(self.path):
            kept = _records_up_to(self.path, run.resumed_from)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, self.path)  # atomic: a kill now leaves the old file or the new one
            run.history[:0] = kept
            self._file = open(self.path, "a")
        else:
            self._file = open(self.path, "w")
        run.outputs["metrics"] = self.path

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def end(self, run: Run) -> None:
        if self._file:
            self._file.close()


def _records_up_to(path: str, step: int) -> list[dict]:
    """The records of steps <= step; a torn last line (killed mid-write) is skipped."""
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(record)
    return kept


class TensorBoardWriter(Hook):
    """Writes emitted scalars as TensorBoard event files (tensorboardX) under <output_dir>/tensorboard."""

    every_n_steps = 0

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writer = None

    def start(self, run: Run) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoard logging needs `tensorboardX`: pip install tensorboardX") from e
        # On resume, TensorBoard drops the killed run's events after the checkpoint step.
        self._writer = SummaryWriter(self.logdir, purge_step=run.step + 1 if run.resumed_from else None)
        run.outputs["tensorboard"] = self.logdir

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)

    def end(self, run: Run) -> None:
        if self._writer:
            self._writer.close()


class ProgressBar(Hook):
    """A tqdm bar of finished steps: first-step compile, s/step, tokens/s, ETA, loss.

    It moves in on_step_finished (the step's outputs are ready), never at dispatch, so its
    count is the truth. Rates and ETA are run.pace's (measured step times, compile and
    checkpoint/eval pauses left out); tqdm's own rate and ETA are not shown.
    """

    every_n_steps = 0
    BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.count = 0  # the finished steps shown
        self._bar = None
        self._postfix: dict[str, str] = {}

    def start(self, run: Run) -> None:
        from tqdm.auto import tqdm

        self.count = run.step
        self._bar = tqdm(
            total=run.total_steps,
            initial=run.step,
            desc=f"train (step {run.step + 1}: compiling)",
            unit="step",
            bar_format=self.BAR_FORMAT,
            disable=not self.enabled,
        )

    def on_step_finished(self, run: Run, step: int) -> None:
        pace = run.pace
        self.count = step
        if pace.measured == 0:  # the first step of this process: compile + one step
            self._postfix["first step"] = f"{pace.first_step_s:.1f}s"
        else:
            self._postfix["s/step"] = f"{pace.step_s:.3g}"
            self._postfix["tok/s"] = f"{pace.tokens_per_s:.4g}"
            self._postfix["ETA"] = format_duration(pace.eta_s)
        self._bar.set_description_str("train", refresh=False)
        self._bar.set_postfix(self._postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        for key, short in (("train/loss", "loss"), ("eval/loss", "eval")):
            if key in metrics:
                self._postfix[short] = f"{metrics[key]:.4g}"

    def end(self, run: Run) -> None:
        self._bar.refresh()
        self._bar.close()


def default_paths(output_dir: str) -> dict[str, str]:
    return {
        "metrics": os.path.join(output_dir, "metrics.jsonl"),
        "tensorboard": os.path.join(output_dir, "tensorboard"),
        "plot": os.path.join(output_dir, "loss_curve.png"),
        "config": os.path.join(output_dir, "config.json"),
        "adapter": os.path.join(output_dir, "adapter"),
        "merged": os.path.join(output_dir, "merged"),
        "model": os.path.join(output_dir, "model"),
        "checkpoints": os.path.join(output_dir, "checkpoints"),
    }
