"""JAX's persistent compilation cache for the train and eval steps: a resume compiles nothing.

    cache = compile_cache.enable(compile_cache.CacheConfig.for_run(config))  # before the first compile
    with compile_cache.Compilations() as seen:
        ...train...
    seen.compiled("train_step"), seen.cache_hits("train_step")
    cache.finish(wait=True)   # gs:// runs: the new entries go up beside the checkpoints

Where the cache lives (CacheConfig.for_run):
- $REACTOR_COMPILE_CACHE (a directory, or `off`), else a directory JAX was already given
  (JAX_COMPILATION_CACHE_DIR / jax_compilation_cache_dir), kept as it is;
- local checkpoints (or none): ~/.cache/reactor/xla-cache ($XDG_CACHE_HOME honoured), shared by
  every run on the machine: the key covers the program, shapes, devices, JAX and XLA flags, so
  a run only ever reads what it would have compiled itself;
  (The path matters: JAX's compile options, hence its cache keys, name the cache directory,
  so every VM of a run must use the same one; ~/.cache/... of the same user is.)
- gs:// checkpoints: JAX cannot write gs:// here (its path layer needs gcsfs, which is not in
  the lock), so the cache is on local disk and mirrored to `<checkpoint_dir>.xla-cache` in the
  bucket through reactor_core.ckpt.gcs (one snapshot, "step" 0): a fresh VM downloads it before
  its first compile and uploads it again once new programs were written.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import threading

import jax

from reactor_core import xla_cache
from reactor_core.ckpt import gcs

log = logging.getLogger("reactor_core.train")

ENV = "REACTOR_COMPILE_CACHE"
_SNAPSHOT = 0  # the mirror's one "step": the cache directory is <local_root>/0


def _cache_home() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reactor")


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """directory: local cache directory ('' = off). mirror_url: gs:// copy of it ('' = none)."""

    directory: str = ""
    mirror_url: str = ""

    def __post_init__(self):
        if self.mirror_url and not gcs.is_gcs_url(self.mirror_url):
            raise ValueError(f"CacheConfig.mirror_url must be gs://BUCKET/PATH or empty, got {self.mirror_url!r}")
        if self.mirror_url and os.path.basename(self.directory) != str(_SNAPSHOT):
            raise ValueError(f"CacheConfig.directory must end in /{_SNAPSHOT} with a mirror, got {self.directory!r}")

    @classmethod
    def for_run(cls, config) -> CacheConfig:
        """Where a TrainingConfig's run keeps its compiled steps (the module docstring's rules)."""
        chosen = os.environ.get(ENV, "")
        if chosen.lower() == "off":
            return cls()
        if chosen:
            return cls(directory=os.path.abspath(os.path.expanduser(chosen)))
        configured = jax.config.jax_compilation_cache_dir
        if configured:
            return cls(directory=configured)
        checkpoints = config.checkpoint.dir
        if config.checkpoint.every_n_steps and gcs.is_gcs_url(checkpoints):
            url = checkpoints.rstrip("/") + ".xla-cache"
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            local = os.path.join(_cache_home(), "xla-cache-mirror", digest, str(_SNAPSHOT))
            return cls(directory=local, mirror_url=url)
        return cls(directory=os.path.join(_cache_home(), "xla-cache"))


class Cache:
    """The enabled cache. A mirrored one uploads new entries after the first step and at the end."""

    def __init__(self, config: CacheConfig):
        self.config = config
        self._uploaded = self._files()
        self._thread: threading.Thread | None = None

    def _files(self) -> set[str]:
        if not self.config.directory or not os.path.isdir(self.config.directory):
            return set()
        return set(os.listdir(self.config.directory))

    def _upload(self) -> None:
        files = self._files()
        if files <= self._uploaded:
            return
        mirror = gcs.CheckpointMirror(self.config.mirror_url, os.path.dirname(self.config.directory))
        try:
            if _SNAPSHOT in mirror.complete_steps():
                mirror.delete_step(_SNAPSHOT)  # marker first: a reader never sees a half-replaced cache
            mirror.upload_step(_SNAPSHOT)
            self._uploaded = files
        except Exception as e:  # a lost cache costs one compile, never the run
            log.warning("could not upload the compilation cache to %s: %s", self.config.mirror_url, e)

    def upload_soon(self) -> None:
        """Starts uploading new entries in the background (a spot VM may not live to the end)."""
        if self.config.mirror_url and self._thread is None:
            self._thread = threading.Thread(target=self._upload, name="compile-cache-upload", daemon=True)
            self._thread.start()

    def finish(self, *, wait: bool = True, grace_s: float = 5.0) -> None:
        """At the end of the run: uploads what is new. wait=False (preempted, the checkpoint is
        committed): only lets an upload already under way finish, for at most grace_s."""
        if not self.config.mirror_url:
            return
        if self._thread is not None:
            self._thread.join(None if wait else grace_s)
        if wait:
            self._upload()


def enable(config: CacheConfig) -> Cache:
    """Points JAX at config.directory (after downloading a mirror), if it can be written."""
    path = config.directory
    if not path:
        return Cache(config)
    if config.mirror_url and not os.path.isdir(path):
        mirror = gcs.CheckpointMirror(config.mirror_url, os.path.dirname(path))
        try:
            if _SNAPSHOT in mirror.complete_steps():
                mirror.download_step(_SNAPSHOT)
        except Exception as e:
            log.warning("could not download the compilation cache from %s: %s", config.mirror_url, e)
    if not xla_cache.use(path):
        log.warning("compilation cache off: cannot create or write %s", path)
        return Cache(CacheConfig())
    log.info("compilation cache: %s%s", path, f" (mirrored to {config.mirror_url})" if config.mirror_url else "")
    return Cache(config)


# ---- counting what compiled ----

_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_MISS = "/jax/compilation_cache/cache_misses"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # wraps every compile-or-load


class Compilations:
    """Counts, per jitted function name, XLA compiles and persistent-cache hits while open.

    JAX reports each program it compiles or loads (`backend_compile_duration`, with the
    function's name) and, inside that, whether the persistent cache had it; a hit is a load,
    anything else a compile. Listeners are JAX-global: only events on this thread count.
    """

    def __init__(self):
        self._thread = threading.get_ident()
        self._outcome: dict[int, str] = {}
        self.compiles: collections.Counter = collections.Counter()
        self.hits: collections.Counter = collections.Counter()
        self.compile_s: collections.Counter = collections.Counter()

    def _event(self, event: str, **kwargs) -> None:
        if event in (_CACHE_HIT, _CACHE_MISS):
            self._outcome[threading.get_ident()] = event

    def _duration(self, event: str, seconds: float, **kwargs) -> None:
        if event != _BACKEND_COMPILE or threading.get_ident() != self._thread:
            return
        name = str(kwargs.get("fun_name", "?"))
        if self._outcome.pop(threading.get_ident(), None) == _CACHE_HIT:
            self.hits[name] += 1
        else:
            self.compiles[name] += 1
            self.compile_s[name] += seconds

    def __enter__(self) -> Compilations:
        jax.monitoring.register_event_listener(self._event)
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_listener(self._event)
        jax.monitoring.unregister_event_duration_listener(self._duration)

    def _sum(self, counter, name: str):
        return sum(v for k, v in counter.items() if name in k)

    def compiled(self, name: str) -> int:
        """XLA compiles of programs whose function name contains `name` (e.g. 'train_step')."""
        return self._sum(self.compiles, name)

    def cache_hits(self, name: str) -> int:
        return self._sum(self.hits, name)

    def seconds(self, name: str) -> float:
        return float(self._sum(self.compile_s, name))
