"""The scheduler: a request queue onto Prime's generation engine, which batches the streams.

    engine = Engine(EngineConfig(max_active=16))
    job = engine.submit(lambda: model.chat_stream(messages, max_tokens=64))
    for event in job.events():          # Piece(text)..., then Done(result) or Failed(error)
        ...
    async for event in engine.submit(start, loop=asyncio.get_running_loop()):  # from asyncio
        ...

Prime's engine decodes every submitted stream together, one batched step per token
(`jarvis_prime/engine.py`); this worker thread starts streams, relays their pieces into
each client's event queue (one next() per active stream per round; the batch never waits
for a slow client) and ends them. Requests beyond `max_active` wait in FIFO order; beyond `max_queue` submit() refuses
with EngineBusy. Cancelling a job (a client that disconnected) closes its stream on the
next round, which frees its slot in Prime's engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable

from jarvis_prime import GenerationResult, TextStream


class EngineBusy(RuntimeError):
    """The wait queue is full; try again shortly."""


class EngineStopped(RuntimeError):
    """The engine was shut down."""


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    max_active: int = 16  # streams advanced together, one token each per round
    max_queue: int = 64  # requests waiting for a slot

    def __post_init__(self):
        if self.max_active < 1:
            raise ValueError(f"EngineConfig.max_active must be >= 1, got {self.max_active}")
        if self.max_queue < 0:
            raise ValueError(f"EngineConfig.max_queue must be >= 0, got {self.max_queue}")


@dataclasses.dataclass(frozen=True)
class Piece:
    text: str


@dataclasses.dataclass(frozen=True)
class Done:
    result: GenerationResult
    queued_seconds: float  # waiting for a slot, before generation started


@dataclasses.dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Piece | Done | Failed


class Job:
    """One request's generation. Events arrive on a thread queue, or an asyncio queue of `loop`."""

    def __init__(self, start: Callable[[], TextStream], loop: asyncio.AbstractEventLoop | None):
        self._start = start
        self._loop = loop
        self._events: queue.SimpleQueue | asyncio.Queue = asyncio.Queue() if loop else queue.SimpleQueue()
        self.stream: TextStream | None = None
        self.cancelled = False
        self.submitted = time.perf_counter()
        self.started: float | None = None
        self.finished = False

    def cancel(self) -> None:
        """Stops generation (thread-safe); a Done with finish_reason "cancelled" follows."""
        self.cancelled = True

    def _push(self, event) -> None:
        if self._loop is None:
            self._events.put(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop closed: nobody is listening any more
            self.cancelled = True

    def events(self, timeout: float | None = None):
        """Blocking iterator of events, ending after Done or Failed (thread-queue jobs)."""
        assert self._loop is None, "this job delivers to an asyncio loop: use `async for`"
        while True:
            event = self._events.get(timeout=timeout)
            yield event
            if not isinstance(event, Piece):
                return

    def __aiter__(self):
        return self._aevents()

    async def _aevents(self):
        assert self._loop is not None, "this job delivers to a thread queue: use events()"
        while True:
            event = await self._events.get()
            yield event
            if not isinstance(event, Piece):
                return


class Engine:
    """Owns the worker thread. Use as a context manager, or call close()."""

    def __init__(self, config: EngineConfig | None = None):
        self.config = config or EngineConfig()
        self._pending: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="jarvis-engine", daemon=True)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def submit(
        self, start: Callable[[], TextStream], *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Job:
        """Queues a generation. `start` runs on the worker thread and returns the TextStream."""
        job = Job(start, loop)
        with self._cond:
            if self._stopped:
                raise EngineStopped("the engine is shut down")
            free = self.config.max_active - len(self._active)
            if len(self._pending) - free >= self.config.max_queue:
                raise EngineBusy(
                    f"{len(self._active)} requests are generating and {len(self._pending)} are waiting; "
                    "try again shortly"
                )
            self._pending.append(job)
            self._cond.notify()
        return job

    def stats(self) -> dict:
        with self._cond:
            return {"active": len(self._active), "queued": len(self._pending)}

    def close(self, timeout: float = 10.0) -> None:
        """Cancels everything and stops the worker."""
        with self._cond:
            self._stopped = True
            for job in list(self._pending) + self._active:
                job.cancel()
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ---- the worker ----

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._active and not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped and not self._active and not self._pending:
                    return
                while self._pending and len(self._active) < self.config.max_active:
                    self._active.append(self._pending.popleft())
                active = list(self._active)
            for job in active:
                if self._step(job):
                    continue
                with self._cond:
                    self._active.remove(job)

    def _step(self, job: Job) -> bool:
        """Advances one job by one token; False when it is over (its last event sent)."""
        try:
            if job.stream is None:
                job.started = time.perf_counter()
                if job.cancelled:
                    job.finished = True
                    job._push(Failed(EngineStopped("cancelled before it started")))
                    return False
                job.stream = job._start()
            stream = job.stream
            if job.cancelled:
                stream.close()
            else:
                piece = next(stream, None)
                if piece:
                    job._push(Piece(piece))
            if stream.result is None:
                return True
            job.finished = True
            job._push(Done(stream.result, queued_seconds=job.started - job.submitted))
            return False
        except Exception as e:  # noqa: BLE001  (a failing request must not take the worker down)
            job.finished = True
            if job.stream is not None:
                with contextlib.suppress(Exception):
                    job.stream.close()
            job._push(Failed(e))
            return False
