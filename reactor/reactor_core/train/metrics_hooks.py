"""Metric hooks: average the step metrics, write metrics.jsonl and TensorBoard, show progress."""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np

from reactor_core.train.hooks import Hook, Run


class TrainMetrics(Hook):
    """Every N steps: fetches the steps' device metrics once and emits their means as train/*."""

    def __init__(self, every_n_steps: int):
        self.every_n_steps = every_n_steps
        self._last_time = None
        self._last_tokens = 0
        self._last_paused = 0.0

    def start(self, run: Run) -> None:
        self._last_time = time.perf_counter()
        self._last_tokens = run.tokens_seen
        self._last_paused = run.paused_s

    def after_step(self, run: Run) -> None:
        if not run.pending:
            return
        host = jax.device_get(run.pending)  # one transfer for all steps since the last log
        run.pending.clear()
        now = time.perf_counter()
        if run.warm_at is not None and run.warm_at > self._last_time:
            # Leave compilation out of the rate: count from the end of the first step.
            self._last_time, self._last_tokens, self._last_paused = run.warm_at, run.warm_tokens, run.paused_s
        out = {}
        for key in host[0]:
            if key == "weight":
                continue
            out[f"train/{key}"] = float(np.mean([m[key] for m in host]))
        if "train/loss" in out and run.config.run.mode == "sft":
            out["train/perplexity"] = math.exp(min(out["train/loss"], 50.0))
        tokens = run.tokens_seen - self._last_tokens
        out["train/tokens"] = float(run.tokens_seen)
        elapsed = now - self._last_time - (run.paused_s - self._last_paused)
        out["train/tokens_per_sec"] = tokens / max(elapsed, 1e-9)
        self._last_time, self._last_tokens, self._last_paused = now, run.tokens_seen, run.paused_s
        run.emit(run.step, out)


class JsonlWriter(Hook):
    """Appends every emitted record to <output_dir>/metrics.jsonl."""

    every_n_steps = 0

    def __init__(self, path: str):
        self.path = path
        self._file = None

    def start(self, run: Run) -> None:
        self._file = open(self.path, "w")
        run.outputs["metrics"] = self.path

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def end(self, run: Run) -> None:
        if self._file:
            self._file.close()


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
        self._writer = SummaryWriter(self.logdir)
        run.outputs["tensorboard"] = self.logdir

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)

    def end(self, run: Run) -> None:
        if self._writer:
            self._writer.close()


class ProgressBar(Hook):
    """A tqdm bar: step, loss, tokens/s and ETA. Updating it never waits for the device."""

    every_n_steps = 1

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None
        self._postfix = {}

    def start(self, run: Run) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=run.total_steps, initial=run.step, desc="train", unit="step", disable=not self.enabled)

    def after_step(self, run: Run) -> None:
        self._bar.update(run.step - self._bar.n)

    def on_metrics(self, run: Run, step: int, metrics: dict[str, float]) -> None:
        for key, short in (("train/loss", "loss"), ("train/tokens_per_sec", "tok/s"), ("eval/loss", "eval")):
            if key in metrics:
                self._postfix[short] = f"{metrics[key]:.4g}"
        self._bar.set_postfix(self._postfix, refresh=False)

    def end(self, run: Run) -> None:
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
