"""Checkpoints for exact resume; the only module that imports Orbax.

One checkpoint = one step directory with two items:
  state  any pytree of arrays (params, full or adapter; optimizer state; step; RNG keys),
         saved by Orbax per shard, restored straight into the target shardings;
  extra  a JSON dict (data-iterator state, anything else small),
plus step metadata holding the run's config dict and its hash. Restoring under a config
whose hash differs is refused with the list of differing fields.

    manager = CheckpointManager("gs://bucket/run1", keep=3, config=dataclasses.asdict(cfg))
    if manager.latest_step() is not None:
        state, extra = manager.restore(abstract_state)   # newest complete step
    ...
    manager.save(step, state, {"data": it.state()})   # async: returns once arrays are copied
    manager.close()

Saves are asynchronous: `save` blocks only while device arrays are copied to host, then
Orbax writes in a background thread (`last_save_blocking_s` records the blocking part).
Atomic commit: Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames it when done,
so a crash mid-save leaves the previous step intact and a temp dir that is ignored and
removed at the next start. Only the newest `keep` steps are kept.

gs:// directories: steps are written to a local staging directory and mirrored to the
bucket by ckpt/gcs.py (files first, commit marker last). A fresh machine downloads the newest
complete step on start-up, so `latest_step()`/`restore()` work the same as on local disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from reactor_core.ckpt import gcs

log = logging.getLogger(__name__)

STATE, EXTRA = "state", "extra"


class ConfigMismatchError(ValueError):
    """The checkpoint was written under a config that differs in fields that matter."""


# ---- config identity ----


def _as_dict(config) -> dict:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    # Round-trip through JSON so tuples/lists and odd scalars compare as they will be stored.
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _drop(flat: dict[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    ignore = tuple(ignore)
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in ignore)}


def config_hash(config, ignore: Iterable[str] = ()) -> str:
    """sha256 of the config's canonical JSON, without the `ignore`d dotted fields."""
    flat = _drop(_flatten(_as_dict(config)), ignore)
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()


def config_diff(saved, current, ignore: Iterable[str] = ()) -> list[str]:
    """["model.hidden_size: checkpoint=64, now=128", ...] over dotted field names."""
    a = _drop(_flatten(_as_dict(saved)), ignore)
    b = _drop(_flatten(_as_dict(current)), ignore)
    missing = object()
    lines = []
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            fmt = lambda v: "<absent>" if v is missing else json.dumps(v)  # noqa: E731
            lines.append(f"{key}: checkpoint={fmt(x)}, now={fmt(y)}")
    return lines


# ---- the manager ----


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
    return x


def _default_staging(url: gcs.GcsUrl) -> str:
    root = os.environ.get("REACTOR_CHECKPOINT_STAGING") or os.path.join(
        os.path.expanduser("~"), ".cache", "reactor", "checkpoints"
    )
    return os.path.join(root, url.bucket, url.prefix or "_root")


class CheckpointManager:
    """Keep-last-N, asynchronous, atomically committed checkpoints in a local or gs:// directory.

    config: the run's config (dict or dataclass); `ignore_fields` are dotted names left out of
    the compatibility check (e.g. "train.num_steps" so a run can be extended).
    staging_dir: local directory for gs:// runs (default ~/.cache/reactor/checkpoints/...).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        async_save: bool = True,
        config=None,
        ignore_fields: Iterable[str] = (),
        staging_dir: str | os.PathLike | None = None,
        gcs_client=None,
    ):
        if keep < 1:
            raise ValueError(f"CheckpointManager keep must be >= 1, got {keep}")
        self.directory = str(directory)
        self.keep = keep
        self.async_save = async_save
        self.config = _as_dict(config)
        self.ignore_fields = tuple(ignore_fields)
        self.config_hash = config_hash(self.config, self.ignore_fields)
        self.last_save_blocking_s: float | None = None
        self.save_blocking_s: list[float] = []
        self._last_saved: int | None = None

        self._mirror = self._uploader = None
        if gcs.is_gcs_url(self.directory):
            if jax.process_count() > 1:
                raise NotImplementedError(
                    f"--checkpoint_dir={self.directory} with {jax.process_count()} processes: gs:// "
                    "checkpoints stage on local disk, and one host's mirror cannot see the other hosts' "
                    "shards. For multi-host runs mount the bucket on every VM (gcsfuse, or a Filestore "
                    "share) and pass the mount path as --checkpoint_dir; Orbax then writes each host's "
                    "shards there itself."
                )
            url = gcs.GcsUrl.parse(self.directory)
            self.local_dir = os.path.abspath(staging_dir or _default_staging(url))
            os.makedirs(self.local_dir, exist_ok=True)
            self._mirror = gcs.CheckpointMirror(self.directory, self.local_dir, client=gcs_client)
            self._sync_from_bucket()
        else:
            self.local_dir = os.path.abspath(self.directory)

        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            # Partial saves of a crashed run are temp dirs: delete them on start.
            cleanup_tmp_directories=True,
            create=True,
        )
        # Handlers named up front so Orbax can also read items it was not asked to restore.
        handlers = {STATE: ocp.StandardCheckpointHandler(), EXTRA: ocp.JsonCheckpointHandler()}
        self._mngr = ocp.CheckpointManager(self.local_dir, options=options, item_handlers=handlers)
        if self._mirror is not None:
            self._uploader = gcs.Uploader(self._mirror, keep=self._local_steps)
            self._heal_bucket()

    # ---- gs:// mirroring ----

    def _local_steps(self) -> set[int]:
        try:
            return {int(n) for n in os.listdir(self.local_dir) if n.isdigit()}
        except FileNotFoundError:
            return set()

    def _sync_from_bucket(self) -> None:
        remote = self._mirror.latest_complete_step()
        local = max(self._local_steps(), default=None)
        if remote is not None and (local is None or remote > local):
            log.info("Fetching step %d from %s", remote, self.directory)
            self._mirror.download_step(remote)

    def _heal_bucket(self) -> None:
        # A local step newer than the bucket's newest: its upload died with the last process.
        local = max(self._local_steps(), default=None)
        remote = self._mirror.latest_complete_step()
        if local is not None and (remote is None or local > remote):
            self._uploader.submit(local, ready=lambda: True, abandoned=lambda: False)

    def _submit_upload(self, step: int) -> None:
        final = os.path.join(self.local_dir, str(step))
        # Orbax renames the finished temp dir to <step>: its existence means "committed locally".
        self._uploader.submit(
            step,
            ready=lambda: os.path.isdir(final),
            abandoned=lambda: not self._mngr.is_saving_in_progress() and not os.path.isdir(final),
        )

    # ---- API ----

    def latest_step(self) -> int | None:
        """Newest complete step (local or, for gs://, fetched from the bucket at start-up)."""
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    @property
    def save_in_progress(self) -> bool:
        """An asynchronous save is still being written (the loop is training meanwhile)."""
        return self._mngr.is_saving_in_progress()

    def save(self, step: int, state, extra: Mapping | None = None, *, force: bool = False) -> bool:
        """Starts saving `state` (pytree of arrays) and `extra` (JSON dict) as `step`.

        Returns False when nothing was saved (this step is already saved). Blocks only for the
        device-to-host copy when async_save; `wait()` blocks until it is on disk (and in the bucket).
        """
        if step == self._last_saved or step in self._mngr.all_steps():
            return False
        extra = json.loads(json.dumps(dict(extra or {})))  # fail now, not in the background thread
        start = time.monotonic()
        saved = self._mngr.save(
            step,
            args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), EXTRA: ocp.args.JsonSave(extra)}),
            custom_metadata={"config": self.config, "config_hash": self.config_hash},
            force=force,
        )
        self.last_save_blocking_s = time.monotonic() - start
        self.save_blocking_s.append(self.last_save_blocking_s)
        if saved:
            self._last_saved = step
            if self._uploader is not None:
                self._submit_upload(step)
        return saved

    def check_config(self, step: int) -> None:
        """Raises ConfigMismatchError if `step` was saved under an incompatible config."""
        meta = self._mngr.metadata(step).custom_metadata or {}
        if meta.get("config_hash") == self.config_hash:
            return
        diff = config_diff(meta.get("config", {}), self.config, self.ignore_fields)
        if not diff:  # same fields, different ignore list when saved: nothing that matters differs
            return
        raise ConfigMismatchError(
            f"Refusing to resume from {self.directory} step {step}: the config differs in "
            f"{len(diff)} field(s):\n  " + "\n  ".join(diff) + "\nUse the original config, or a new checkpoint_dir."
        )

    def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict]:
        """Restores (state, extra) of `step` (default: newest) into `abstract_state`'s layout.

        abstract_state: the pytree to fill, as arrays or jax.ShapeDtypeStruct (with sharding
        for sharded restore).
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"No complete checkpoint in {self.directory}")
        elif step not in self._mngr.all_steps():
            if self._mirror is None:
                raise FileNotFoundError(f"No checkpoint for step {step} in {self.directory}")
            self._mirror.download_step(step)
            self._mngr.reload()
        self.check_config(step)
        target = jax.tree.map(_abstract, abstract_state)
        restored = self._mngr.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target), EXTRA: ocp.args.JsonRestore()})
        )
        return restored[STATE], dict(restored[EXTRA] or {})

    def wait(self) -> None:
        """Blocks until every started save is committed (and, for gs://, uploaded)."""
        self._mngr.wait_until_finished()
        if self._uploader is not None:
            self._uploader.drain()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._mngr.close()
            if self._uploader is not None:
                self._uploader.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def checkpoint_hook(
    manager: CheckpointManager, *, every_steps: int, extra_fn: Callable[[], Mapping] | None = None
) -> Callable[[int, Any], bool]:
    """A trainer hook `hook(step, state) -> saved?` that saves every `every_steps` steps.

    extra_fn returns the JSON extras at save time (e.g. `lambda: {"data": iterator.state()}`).
    """
    if every_steps < 1:
        raise ValueError(f"every_steps must be >= 1, got {every_steps}")

    def hook(step: int, state) -> bool:
        if step % every_steps:
            return False
        return manager.save(step, state, extra_fn() if extra_fn else {})

    return hook
