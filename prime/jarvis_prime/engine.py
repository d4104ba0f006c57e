"""The generation engine: one per loaded JAX model; it owns the KV cache, the programs and the sampler.

    engine = GenerationEngine(model, EngineConfig(slots=4))
    engine.warm_up()                                   # compiles every program; nothing compiles later
    request = engine.submit(prompt_ids, sampling, stop_ids={2})
    for token in request:                              # blocks for each token; ends at stop/max_tokens
        ...
    request.cancel()                                   # from any thread: frees its slot next step

Contract:
- A fixed set of programs, compiled by `warm_up()` (and kept in JAX's persistent compilation
  cache, see `compile_cache`): a prefill program per chunk size (`EngineConfig.chunks`) and a
  decode program per batch size (1, 2, 4, ... `slots`). A prompt of any length is read in
  chunks; a decode step of any number of conversations is padded to the next batch size. Sampling
  settings are runtime values of those same programs.
- KV reuse: the cache has `slots` rows of `capacity` tokens. A new request takes the idle row
  whose cached tokens share the longest prefix with its prompt and prefills only the rest (a
  chat's next turn re-sends the history: only the new message is read). Rows are reused least
  recently used first.
- Continuous batching: one worker thread. Each round it reads one prefill chunk of one waiting
  request (round robin) and runs one decode step for every decoding request together; requests
  join and leave between rounds. A row's tokens do not depend on who else is in the batch
  (per-row sampling draws come from its own seed and step).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from reactor_core.generation.sampling import SamplingArrays, SamplingConfig, row_uniforms, sample
from reactor_core.models.slot_cache import SlotCache

from jarvis_prime.errors import PrimeError

_DONE = object()
_PADDING = SamplingConfig()  # rows of a padded batch: greedy, no filters
_CHUNK_OVERHEAD = 4  # a prefill call's fixed cost, in rows (see chunk_plan)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    slots: int = 4  # conversations whose KV cache stays resident (and decode together)
    capacity: int | None = None  # tokens per slot; None = min(model context, 4096)
    # Prefill chunk sizes, one program each. A chunk costs about its rows plus a fixed share, so
    # a chat turn's 20-odd new tokens go as 16 + 4 and a long prompt as 64s (chunk_plan).
    chunks: tuple[int, ...] = (4, 16, 64)
    # Keys/values as stored: None = float16 for a float32 model (half the bytes a long chat's
    # decode reads, as llama.cpp keeps them), else the model's compute dtype.
    kv_dtype: str | None = None

    def __post_init__(self):
        if not isinstance(self.slots, int) or self.slots < 1:
            raise ValueError(f"EngineConfig.slots must be an integer >= 1, got {self.slots!r}")
        if self.capacity is not None and self.capacity < 16:
            raise ValueError(f"EngineConfig.capacity must be >= 16 tokens, got {self.capacity}")
        if not self.chunks or any(c < 1 for c in self.chunks):
            raise ValueError(f"EngineConfig.chunks must be sizes >= 1, got {self.chunks}")
        object.__setattr__(self, "chunks", tuple(sorted(set(self.chunks))))
        if self.kv_dtype not in (None, "float32", "float16", "bfloat16"):
            raise ValueError(f"EngineConfig.kv_dtype must be float32, float16, bfloat16 or None, got {self.kv_dtype!r}")

    def batch_sizes(self) -> tuple[int, ...]:
        sizes, b = [], 1
        while b < self.slots:
            sizes.append(b)
            b *= 2
        return (*sizes, self.slots)


@dataclasses.dataclass
class _Slot:
    tokens: list[int]  # tokens whose keys/values are valid in this row, position = index
    used: float = 0.0  # last time a request ran here (LRU)
    busy: bool = False


class Request:
    """One generation. Iterate for its token ids; `cancel()` is thread-safe."""

    def __init__(self, prompt: list[int], sampling, stop_ids: frozenset[int], max_tokens: int, seed: int):
        self.prompt = prompt
        self.sampling = sampling
        self.stop_ids = stop_ids
        self.max_tokens = max_tokens
        self.seed = seed
        self.cancelled = False
        self.reused = 0  # prompt tokens found in the cache (not prefilled again)
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        # Worker-side state.
        self.slot = -1
        self.todo: list[int] = []  # prompt tokens still to prefill
        self.position = 0  # next cache position to write
        self.next_token = -1  # sampled, not yet fed
        self.generated = 0

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    close = cancel


def _step(graphdef, treedef, leaves, cache, seen, tokens, positions, slots, last, params, seeds, steps):
    """Every program the engine runs: forward a chunk or a decode batch, then sample one token per row."""
    model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    logits, cache = model.forward_slots(tokens, positions=positions, slots=slots, last=last, cache=cache)
    token = sample(logits, params, seen[slots], row_uniforms(seeds, steps))  # (B,)
    seen = seen.at[slots, token].set(True)
    return token, cache, seen


def _reset_seen(seen, row, ids):
    """Row `row` of the repetition-penalty mask (N, V) <- the tokens `ids` (C,) (-1 = none)."""
    fresh = jnp.zeros(seen.shape[1], bool).at[jnp.where(ids < 0, seen.shape[1], ids)].set(True, mode="drop")
    return seen.at[row].set(fresh)


class GenerationEngine:
    """Owns a model's cache rows, its compiled programs and the worker thread (module docstring)."""

    def __init__(
        self, model, config: EngineConfig | None = None, *, context_length: int | None = None, device=None
    ):
        self.config = config = config or EngineConfig()
        self.device = device  # programs trace under this default device, in every thread
        cfg = model.config
        window = context_length or cfg.max_position_embeddings
        compute = jnp.dtype(cfg.dtype)  # float32 on CPU, bfloat16 on accelerators
        dtype = jnp.dtype(config.kv_dtype or ("float16" if compute == jnp.float32 else compute))
        self.capacity = min(config.capacity or _default_capacity(cfg, config.slots, dtype.itemsize), window)
        self.vocab = cfg.vocab_size
        self.graphdef, self.state = nnx.split(model)
        self.scratch = config.slots  # an extra row: batch padding and warm-up write there
        # Chunk padding writes past a prompt's end: room for one chunk beyond capacity.
        self.cache = SlotCache.init(
            cfg, slots=config.slots + 1, capacity=self.capacity + max(config.chunks), dtype=dtype
        )
        self.seen = jnp.zeros((config.slots + 1, self.vocab), bool)
        self.traces = 0
        # The weights go in as a flat list (nnx.State and GraphDef cost milliseconds per call to
        # flatten and hash); the program closes over the structure.
        self._leaves, treedef = jax.tree.flatten(self.state)
        step = functools.partial(_step, self.graphdef, treedef)
        self.step_fn = jax.jit(self._counted(step), donate_argnums=(1, 2))
        self.reset_fn = jax.jit(self._counted(_reset_seen), donate_argnums=0)
        self._slots = [_Slot(tokens=[]) for _ in range(config.slots)]
        self._pending: collections.deque[Request] = collections.deque()
        self._active: list[Request] = []
        self._cond = threading.Condition()  # guards _pending and _stopped
        self._device = threading.Lock()  # one user of the cache and programs at a time
        self._stopped = False
        self._inflight = None  # (requests, device tokens) of a decode step queued, not yet read
        self.stats = collections.Counter()  # prefilled / reused / decoded tokens, steps
        self._thread = threading.Thread(target=self._run, name="prime-engine", daemon=True)
        self._thread.start()

    def _counted(self, fn):
        def traced(*args):
            self.traces += 1  # runs while tracing only: once per compiled program
            return fn(*args)

        return traced

    # ---- programs ----

    def _dispatch(self, tokens, positions, slots, last, rows: Sequence[Request | None], ahead: int = 0):
        """Queues one program run; returns its (B,) tokens on the device (JAX runs it asynchronously).

        `ahead`: steps already queued for these rows and not yet delivered (their draw index)."""
        params = SamplingArrays.rows([r.sampling if r is not None else _PADDING for r in rows])
        seeds = np.array([r.seed if r is not None else 0 for r in rows], np.uint32)
        steps = np.array([r.generated + ahead if r is not None else 0 for r in rows], np.int32)
        token, self.cache, self.seen = self.step_fn(
            self._leaves, self.cache, self.seen, tokens, positions, slots, last, params, seeds, steps
        )
        return token

    def _run_step(self, tokens, positions, slots, last, rows: Sequence[Request | None]):
        return np.asarray(self._dispatch(tokens, positions, slots, last, rows))

    def warm_up(self) -> float:
        """Compiles (or loads from the persistent cache) every program; returns the seconds it took."""
        start = time.perf_counter()
        with self._device, jax.default_device(self.device):
            for chunk in self.config.chunks:
                self._run_step(
                    np.zeros((1, chunk), np.int32),
                    np.full((1, chunk), -1, np.int32),
                    np.array([self.scratch], np.int32),
                    np.zeros(1, np.int32),
                    [None],
                )
            for b in self.config.batch_sizes():
                self._run_step(
                    np.zeros((b, 1), np.int32),
                    np.full((b, 1), -1, np.int32),
                    np.full(b, self.scratch, np.int32),
                    np.zeros(b, np.int32),
                    [None] * b,
                )
            self.seen = self.reset_fn(self.seen, np.int32(self.scratch), np.full(self.capacity, -1, np.int32))
            jax.block_until_ready(self.seen)
        self.warm_traces = self.traces
        return time.perf_counter() - start

    # ---- requests ----

    def submit(self, prompt: Sequence[int], sampling, *, stop_ids=frozenset(), max_tokens: int, seed: int = 0) -> Request:
        """Queues a generation of up to `max_tokens` tokens after `prompt` (ids)."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise PrimeError("The prompt is empty; pass at least one token")
        if len(prompt) + max_tokens > self.capacity:
            raise PrimeError(
                f"The prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"{self.capacity}-token window; trim the conversation or lower max_tokens"
            )
        bad = [t for t in prompt if not 0 <= t < self.vocab]
        if bad:
            raise PrimeError(f"Token id {bad[0]} is outside the vocabulary (0..{self.vocab - 1})")
        request = Request(prompt, sampling, frozenset(stop_ids), max_tokens, seed & 0xFFFFFFFF)
        with self._cond:
            if self._stopped:
                raise PrimeError("The generation engine is shut down")
            self._pending.append(request)
            self._cond.notify()
        return request

    def busy(self) -> int:
        """Requests queued or running (a cancelled one runs until the worker's next step)."""
        with self._cond:
            return len(self._pending) + len(self._active)

    def cached_tokens(self) -> list[list[int]]:
        """The tokens each slot holds (for tests and diagnostics)."""
        with self._device:
            return [list(s.tokens) for s in self._slots]

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(10)

    # ---- the worker ----

    def _run(self) -> None:
        with jax.default_device(self.device):
            self._loop()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._active and not self._pending:
                    self._cond.wait()
                if self._stopped:
                    for r in list(self._pending) + self._active:
                        r._out.put(PrimeError("The generation engine was shut down"))
                    return
                arrivals = []
                while self._pending and len(self._active) + len(arrivals) < self.config.slots:
                    arrivals.append(self._pending.popleft())
            with self._device:
                for request in arrivals:
                    self._admit(request)
                prefilling = [r for r in self._active if r.todo]
                decoding = [r for r in self._active if not r.todo]
                try:
                    if prefilling:  # one chunk per round, round robin: decode streams keep going
                        self._prefill_chunk(prefilling[0])
                        self._active.remove(prefilling[0])
                        self._active.append(prefilling[0])
                    if decoding:
                        self._decode(decoding)
                except Exception as e:  # noqa: BLE001 - a failing step must not take the worker down
                    self._inflight = None
                    for r in prefilling[:1] + decoding:
                        if r.slot >= 0:
                            self._finish(r, e)
                self._active = [r for r in self._active if r.slot >= 0]

    def _admit(self, request: Request) -> None:
        """Puts a request on the idle slot sharing the longest prefix with its prompt (else LRU)."""
        if request.cancelled:
            request._out.put(_DONE)
            return

        def shared(i):
            n = 0
            for a, b in zip(self._slots[i].tokens, request.prompt):
                if a != b:
                    break
                n += 1
            return n

        free = [i for i, s in enumerate(self._slots) if not s.busy]
        best = max(free, key=lambda i: (shared(i), -self._slots[i].used))
        reuse = min(shared(best), len(request.prompt) - 1)  # at least one token to read: its logits
        slot = self._slots[best]
        slot.busy, slot.used = True, time.monotonic()
        slot.tokens = slot.tokens[:reuse]
        request.slot, request.reused, request.position = best, reuse, reuse
        request.todo = request.prompt[reuse:]
        self.stats["reused"] += reuse
        ids = np.full(self.capacity, -1, np.int32)
        ids[: len(request.prompt)] = request.prompt
        self.seen = self.reset_fn(self.seen, np.int32(best), ids)
        self._active.append(request)

    def _prefill_chunk(self, request: Request) -> None:
        if request.cancelled:
            return self._finish(request)
        n_left = len(request.todo)
        chunk = chunk_plan(n_left, self.config.chunks)[0]
        n = min(n_left, chunk)
        tokens = np.zeros((1, chunk), np.int32)
        positions = np.full((1, chunk), -1, np.int32)
        tokens[0, :n] = request.todo[:n]
        positions[0, :n] = np.arange(request.position, request.position + n)
        token = self._run_step(
            tokens, positions, np.array([request.slot], np.int32), np.array([n - 1], np.int32), [request]
        )
        slot = self._slots[request.slot]
        slot.tokens.extend(request.todo[:n])
        request.position += n
        request.todo = request.todo[n:]
        self.stats["prefilled"] += n
        if not request.todo:  # the last chunk's sample is the first generated token
            self._deliver(request, int(token[0]))

    def _decode(self, requests: list[Request]) -> None:
        """One decode step for `requests`. While the batch stays the same, the next step is queued
        on the device (fed by this step's tokens, still on the device) before this one is read, so
        the host's work per token overlaps the model's."""
        live = [r for r in requests if not r.cancelled]
        for r in requests:
            if r.cancelled:
                self._finish(r)
        previous, self._inflight = self._inflight, None
        if previous is not None and previous[0] == live:
            # Queued behind `previous`: positions and draws one step further on.
            self._inflight = (live, self._decode_dispatch(live, previous[1][:, None], ahead=1))
            self._deliver_step(*previous)
            return
        if previous is not None:
            self._deliver_step(*previous)
            live = [r for r in live if r.slot >= 0 and not r.cancelled]
        if live:
            tokens = np.zeros((self._batch(len(live)), 1), np.int32)
            tokens[: len(live), 0] = [r.next_token for r in live]
            self._inflight = (live, self._decode_dispatch(live, tokens, ahead=0))

    def _batch(self, n: int) -> int:
        return next(s for s in self.config.batch_sizes() if s >= n)

    def _decode_dispatch(self, live: list[Request], tokens, ahead: int):
        b = self._batch(len(live))
        positions = np.full((b, 1), -1, np.int32)
        slots = np.full(b, self.scratch, np.int32)
        for i, r in enumerate(live):
            positions[i, 0], slots[i] = r.position + ahead, r.slot
        self.stats["steps"] += 1
        return self._dispatch(tokens, positions, slots, np.zeros(b, np.int32), live + [None] * (b - len(live)), ahead)

    def _deliver_step(self, rows: list[Request], out) -> None:
        """Reads a decode step's tokens (waits for it) and hands each still-running row its token."""
        out = np.asarray(out)
        for i, r in enumerate(rows):
            if r.slot < 0 or r.cancelled:  # finished or cancelled since: its step is dropped
                continue
            self._slots[r.slot].tokens.append(r.next_token)  # fed by this step: now in the cache
            r.position += 1
            self._deliver(r, int(out[i]))

    def _drain(self) -> None:
        previous, self._inflight = self._inflight, None
        if previous is not None:
            self._deliver_step(*previous)

    def _deliver(self, request: Request, token: int) -> None:
        request.generated += 1
        self.stats["decoded"] += 1
        request._out.put(token)
        if token in request.stop_ids or request.generated >= request.max_tokens:
            self._finish(request)
        else:
            request.next_token = token

    def _finish(self, request: Request, error: BaseException | None = None) -> None:
        if request.slot >= 0:
            slot = self._slots[request.slot]
            slot.busy, slot.used = False, time.monotonic()
            if error is not None:  # what the failed step left in the row is unknown
                slot.tokens = []
            request.slot = -1
        request._out.put(error if error is not None else _DONE)


@functools.lru_cache(maxsize=4096)
def chunk_plan(n: int, chunks: tuple[int, ...]) -> tuple[int, ...]:
    """The cheapest prefill chunk sizes covering n tokens (the last one padded), largest first.

    A chunk costs about its rows plus a fixed share (a dispatch, the weights read once):
    measured on 2 cores, 4 / 16 / 64 rows take 11 / 33 / 96 ms. So 19 tokens go as 16 + 4,
    not as one padded 64 nor as 16 + 16."""
    best: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for m in range(1, n + 1):
        best.append(min((best[max(m - c, 0)][0] + c + _CHUNK_OVERHEAD, (c, *best[max(m - c, 0)][1])) for c in chunks))
    return tuple(sorted(best[n][1], reverse=True))


def _default_capacity(cfg, slots: int, itemsize: int) -> int:
    """4,096 tokens per slot, fewer where all slots would take over a quarter of the memory."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4096
    per_token = SlotCache.bytes_per_token(cfg, itemsize) * (slots + 1)
    fit = int(memory * 0.25) // per_token // 256 * 256
    return max(256, min(4096, fit))


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")
