"""Spot-VM preemption: notice it, agree on a step, save, exit with EXIT_PREEMPTED.

A GCP spot VM gets SIGTERM about 30 s before it stops, and its metadata server starts
answering `instance/preempted` with TRUE. `PreemptionWatcher` listens for both (the signal
through a handler, the metadata server from a daemon thread) and only sets a flag: the loop
asks `should_stop(step)` between steps, finishes the step it is in, saves synchronously and
exits:

    with PreemptionWatcher() as watcher:
        for step in ...:
            state = train_step(state, batch)
            if watcher.should_stop(step):
                manager.save(step, state, extra, force=True)
                manager.wait()  # synchronous: must land inside the grace window
                raise SystemExit(EXIT_PREEMPTED)

With several processes, `should_stop` all-gathers the flag at every check, so all of them
stop after the same step even if only one host got the notice (JAX's own
`multihost_utils.reached_preemption_sync_point` only knows about SIGTERM, not the metadata
server, hence the explicit flag sync). Call it on every process at the same steps.

EXIT_PREEMPTED = 143 (128 + SIGTERM), what a shell reports for a process killed by SIGTERM:
supervisors (the startup script in gcp/launcher.py) read it as "stopped on purpose after a
checkpoint; start again and resume", unlike 0 (done) or anything else (a failure).
"""

from __future__ import annotations

import logging
import signal
import threading

from reactor_core import env as env_lib

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 143


class PreemptionWatcher:
    """Sets a stop flag on SIGTERM (and other `signals`) or a metadata preemption notice.

    poll_metadata: None polls only on GCE (env.on_gce()); True/False force it.
    """

    def __init__(
        self,
        *,
        signals: tuple[int, ...] = (signal.SIGTERM,),
        poll_metadata: bool | None = None,
        metadata_host: str | None = None,
        poll_interval_s: float = 1.0,
        sync_every_steps: int = 1,
    ):
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if sync_every_steps < 1:
            raise ValueError(f"sync_every_steps must be >= 1, got {sync_every_steps}")
        self.signals = tuple(signals)
        self.poll_metadata = env_lib.on_gce() if poll_metadata is None else poll_metadata
        self.metadata_host = metadata_host
        self.poll_interval_s = poll_interval_s
        self.sync_every_steps = sync_every_steps
        self._flag = threading.Event()
        self._closed = threading.Event()
        self._reason: str | None = None
        self._previous_handlers: dict[int, object] = {}
        self._thread: threading.Thread | None = None
        self._agreed = False
        self._announced = False

    # ---- lifecycle ----

    def start(self) -> PreemptionWatcher:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        elif self.signals:
            log.warning("PreemptionWatcher started off the main thread: signal handlers not installed")
        if self.poll_metadata:
            self._thread = threading.Thread(target=self._poll, name="preemption-metadata", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._closed.set()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_interval_s + 1.0)

    def __enter__(self) -> PreemptionWatcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- notices ----

    def trigger(self, reason: str) -> None:
        """Marks this process as preempted (also usable by a health check or a test).

        Logs nothing: this runs inside signal handlers, which can interrupt the main thread in
        the middle of a write to stderr (a nested log write there fails with "reentrant call").
        `should_stop` announces the notice from the loop.
        """
        if not self._flag.is_set():
            self._reason = reason
            self._flag.set()

    def _on_signal(self, signum, frame) -> None:
        # A signal handler must not block, take locks or write to a stream: just set the flag.
        self.trigger(f"signal {signal.Signals(signum).name}")

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            log.warning("Preemption notice: %s; stopping after the current step", self._reason)

    def _poll(self) -> None:
        while not self._closed.is_set() and not self._flag.is_set():
            # The metadata server answers TRUE once the VM is being preempted.
            answer = env_lib.metadata_get(
                "instance/preempted", timeout=min(2.0, self.poll_interval_s * 2), host=self.metadata_host
            )
            if answer is not None and answer.strip().upper() == "TRUE":
                self.trigger("metadata server: instance/preempted=TRUE")
                return
            self._closed.wait(self.poll_interval_s)

    @property
    def triggered(self) -> bool:
        """This process got a notice (no cross-process agreement; see should_stop)."""
        return self._flag.is_set()

    @property
    def reason(self) -> str | None:
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)

    # ---- the loop's question ----

    def should_stop(self, step: int) -> bool:
        """True when the loop should save and exit after `step`; the same answer on all processes."""
        if self._agreed:
            return True
        if step % self.sync_every_steps:
            return False
        local = self._flag.is_set()
        if local:
            self._announce()
        import jax  # the watcher itself works without JAX (tests, launcher)

        if jax.process_count() > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(np.asarray([local], np.int32))
            self._agreed = bool(np.asarray(flags).any())
            if self._agreed and not local:
                self._reason = "another process got a preemption notice"
                self._announce()
        else:
            self._agreed = local
        return self._agreed

