"""Evaluation as a hook: every N steps, the held-out loss (and perplexity, or DPO rewards)."""

from __future__ import annotations

import math
import time

import jax
import numpy as np

from reactor_core.train.hooks import Hook, Run


class Evaluate(Hook):
    """Runs `eval_step` over fixed host batches and emits eval/* (weighted means)."""

    def __init__(self, eval_step, batches: list, *, every_n_steps: int, at_start: bool = True):
        if not batches:
            raise ValueError("Evaluate needs at least one eval batch")
        self.eval_step = eval_step
        self.batches = batches
        self.every_n_steps = every_n_steps
        self.at_start = at_start

    def evaluate(self, run: Run) -> dict[str, float]:
        state = run.state
        sums = [self.eval_step(state.params, state.rng, run.split.frozen, run.reference, b) for b in self.batches]
        sums = jax.device_get(sums)  # one transfer after all batches are queued
        total = sum(float(s["weight"]) for s in sums)
        out = {}
        for key in sums[0]:
            if key.endswith("_sum"):
                out[f"eval/{key.removesuffix('_sum')}"] = float(np.sum([s[key] for s in sums])) / max(total, 1e-8)
        if run.config.run.mode == "sft":
            out["eval/perplexity"] = math.exp(min(out["eval/loss"], 50.0))
        out["eval/weight"] = total
        return out

    def start(self, run: Run) -> None:
        if self.at_start and not run.resumed_from:  # a resumed run logged it the first time
            run.emit(run.step, self.evaluate(run))

    def after_step(self, run: Run) -> None:
        jax.block_until_ready(run.state)  # finish queued training steps before timing the pause
        started = time.perf_counter()
        metrics = self.evaluate(run)
        run.paused_s += time.perf_counter() - started
        run.emit(run.step, metrics)
