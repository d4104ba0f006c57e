"""Pace: what the finished steps say about speed (first-step compile, seconds per step, tokens/s, ETA).

    pace = Pace(total_steps=400, start_step=0)
    pace.start(now, tokens_seen, paused_s)         # just before this process dispatches its first step
    pace.finish(step, now, tokens_seen, paused_s)  # each step, once its outputs are ready
    pace.step_s, pace.tokens_per_s, pace.eta_s

Only finished steps count: the loop calls `finish` after waiting on a step's outputs, never
at dispatch (JAX returns from a dispatch long before the device is done). The first step
of a process includes compiling the train step (or reading it from the persistent
compilation cache), so it is kept apart as `first_step_s` and left out of the rates.
Time that hooks spend off the training path (checkpoints, eval: Run.paused_s) is left out
of the step times too; the ETA covers training steps only.
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class Pace:
    total_steps: int
    start_step: int  # the step this process starts from (a resumed run: the checkpoint's)
    window: int = 20  # rates average the last `window` measured steps
    finished: int = 0  # the newest finished step (start_step before any)
    start_tokens: int = 0  # tokens_seen when this process started stepping
    first_step_s: float | None = None  # dispatch of the first step -> its outputs ready
    _started: float | None = None
    _last_time: float | None = None
    _last_tokens: int = 0
    _last_paused: float = 0.0
    _start_paused: float = 0.0
    _recent: collections.deque = dataclasses.field(default_factory=collections.deque)  # (seconds, tokens)

    def __post_init__(self):
        self.finished = self.start_step

    def start(self, now: float, tokens_seen: int, paused_s: float = 0.0) -> None:
        self._started, self.start_tokens = now, tokens_seen
        self._start_paused = self._last_paused = paused_s

    def finish(self, step: int, now: float, tokens_seen: int, paused_s: float) -> None:
        """Step `step` (the next after `finished`) has finished at `now`, with tokens_seen after it."""
        assert step == self.finished + 1, (step, self.finished)
        if self._last_time is None:
            started = self._started if self._started is not None else now
            self.first_step_s = max(now - started - (paused_s - self._last_paused), 0.0)
        else:
            seconds = max(now - self._last_time - (paused_s - self._last_paused), 1e-9)
            self._recent.append((seconds, tokens_seen - self._last_tokens))
            if len(self._recent) > self.window:
                self._recent.popleft()
        self.finished = step
        self._last_time, self._last_tokens, self._last_paused = now, tokens_seen, paused_s

    @property
    def measured(self) -> int:
        """How many steps the rates rest on (the first step of a process is not one of them)."""
        return len(self._recent)

    @property
    def step_s(self) -> float | None:
        if not self._recent:
            return None
        return sum(s for s, _ in self._recent) / len(self._recent)

    @property
    def tokens_per_s(self) -> float | None:
        if not self._recent:
            return None
        return sum(t for _, t in self._recent) / sum(s for s, _ in self._recent)

    @property
    def eta_s(self) -> float | None:
        """Seconds until the last step at the measured pace; None before a step was measured."""
        step_s = self.step_s
        return None if step_s is None else step_s * (self.total_steps - self.finished)

    def rate_so_far(self, now: float, tokens_seen: int, paused_s: float) -> float:
        """Tokens/s since start(), compile included: the only rate before a step was measured."""
        started = self._started if self._started is not None else now
        elapsed = now - started - (paused_s - self._start_paused)
        return (tokens_seen - self.start_tokens) / max(elapsed, 1e-9)

    def figures(self) -> dict[str, float]:
        """The measured figures as metrics (train/*); empty before the first step finished."""
        out = {}
        if self.first_step_s is not None:
            out["train/first_step_s"] = self.first_step_s
        if self.step_s is not None:
            out["train/step_s"] = self.step_s
            out["train/tokens_per_sec"] = self.tokens_per_s
            out["train/eta_s"] = self.eta_s
        return out


def format_duration(seconds: float | None) -> str:
    """3725 -> '1:02:05', 65 -> '1:05', None -> '?'."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
