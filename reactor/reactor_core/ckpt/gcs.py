"""The one module that talks to Google Cloud Storage: mirrors local checkpoint steps to gs://.

Orbax writes each step to local disk (atomic rename of a finished temporary directory);
this module copies finished steps to `gs://bucket/prefix/<step>/...` and writes the commit
marker `<step>/COMMIT.json` LAST. A step without a marker is an upload that died half way
and is never taken for complete: readers list markers, not directories. Deleting goes the
other way round (marker first), so a half-deleted step is incomplete too.

Why not Orbax's own gs:// support? It needs gcsfs (or TensorFlow) for its path layer, which
are not in the lock; the staging-and-mirror scheme also keeps saves at local-disk speed.

Tests and benches point the client at a local server with STORAGE_EMULATOR_HOST
(gcp-storage-emulator); then anonymous credentials are used.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MARKER = "COMMIT.json"


def is_gcs_url(path) -> bool:
    return str(path).startswith("gs://")


@dataclasses.dataclass(frozen=True)
class GcsUrl:
    bucket: str
    prefix: str  # no leading/trailing slash; may be ""

    @classmethod
    def parse(cls, url: str) -> GcsUrl:
        if not is_gcs_url(url):
            raise ValueError(f"Not a gs:// URL: {url!r}")
        bucket, _, prefix = url[len("gs://") :].partition("/")
        if not bucket:
            raise ValueError(f"No bucket in {url!r}; expected gs://BUCKET/PATH")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts) -> str:
        return "/".join(p for p in (self.prefix, *map(str, parts)) if p)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"


def make_client(project: str | None = None):
    """A storage.Client; against STORAGE_EMULATOR_HOST with anonymous credentials."""
    try:
        from google.cloud import storage
    except ImportError as e:  # pragma: no cover - the lock has it
        raise ImportError("gs:// checkpoints need google-cloud-storage (requirement('google-cloud-storage'))") from e
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials())
    return storage.Client(project=project)


def _local_files(root: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


class CheckpointMirror:
    """Step directories under `url` <-> step directories under `local_root`."""

    def __init__(self, url: str, local_root: str, *, client=None, workers: int = 8):
        self.url = GcsUrl.parse(url)
        self.local_root = os.path.abspath(local_root)
        self._client = client
        self.workers = workers

    @property
    def client(self):
        if self._client is None:
            self._client = make_client()
        return self._client

    @property
    def bucket(self):
        return self.client.bucket(self.url.bucket)

    # ---- reading the bucket ----

    def step_prefixes(self) -> list[int]:
        """Every step with anything uploaded (complete or not)."""
        prefix = self.url.prefix + "/" if self.url.prefix else ""
        iterator = self.client.list_blobs(self.url.bucket, prefix=prefix, delimiter="/")
        list(iterator)  # prefixes are filled in while paging
        steps = []
        for p in iterator.prefixes:
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if name.isdigit():
                steps.append(int(name))
        return sorted(steps)

    def complete_steps(self) -> list[int]:
        """Steps whose commit marker exists: the only ones a reader may use."""
        return [s for s in self.step_prefixes() if self.bucket.blob(self.url.key(s, MARKER)).exists()]

    def latest_complete_step(self) -> int | None:
        steps = self.complete_steps()
        return steps[-1] if steps else None

    # ---- writing ----

    def _side_dir(self, kind: str, step: int) -> str:
        # Beside the Orbax root, not in it: Orbax must never see these.
        parent, name = os.path.split(self.local_root)
        return os.path.join(parent, f".{name}.{kind}-{step}")

    def _snapshot(self, step: int) -> str:
        """Hard links to the step's files, so Orbax's keep-N may delete the step mid-upload."""
        src = os.path.join(self.local_root, str(step))
        snap = self._side_dir("upload", step)
        shutil.rmtree(snap, ignore_errors=True)
        try:
            shutil.copytree(src, snap, copy_function=os.link)
        except OSError:  # no hard links here (another filesystem): upload in place
            shutil.rmtree(snap, ignore_errors=True)
            return src
        return snap

    def upload_step(self, step: int) -> float:
        """Uploads local_root/<step>/ then its marker; returns bytes/s."""
        if not os.path.isdir(os.path.join(self.local_root, str(step))):
            raise FileNotFoundError(f"Nothing to upload: {self.local_root}/{step} is missing")
        src = self._snapshot(step)
        try:
            files = _local_files(src)
            sizes = {rel: os.path.getsize(os.path.join(src, rel)) for rel in files}
            start = time.monotonic()
            bucket = self.bucket

            def put(rel):
                bucket.blob(self.url.key(step, rel)).upload_from_filename(os.path.join(src, rel))

            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(put, files))
            marker = {"step": step, "files": sizes, "uploaded_at": time.time()}
            # Last, and only after every file above succeeded: this makes the step complete.
            data = json.dumps(marker)
            bucket.blob(self.url.key(step, MARKER)).upload_from_string(data, content_type="application/json")
        finally:
            if src != os.path.join(self.local_root, str(step)):
                shutil.rmtree(src, ignore_errors=True)
        elapsed = max(time.monotonic() - start, 1e-9)
        mb = sum(sizes.values()) / 1e6
        log.info("Uploaded step %d (%d files, %.1f MB) to %s in %.1fs", step, len(files), mb, self.url, elapsed)
        return sum(sizes.values()) / elapsed

    def delete_step(self, step: int) -> None:
        bucket = self.bucket
        marker = bucket.blob(self.url.key(step, MARKER))
        if marker.exists():
            marker.delete()  # first: from here on the step is incomplete
        for blob in self.client.list_blobs(self.url.bucket, prefix=self.url.key(step) + "/"):
            blob.delete()

    def prune(self, keep: set[int]) -> None:
        """Deletes steps not in `keep`; incomplete leftovers only when older than a kept step."""
        complete = set(self.complete_steps())
        newest_kept = max(keep, default=-1)
        for step in self.step_prefixes():
            if step in keep:
                continue
            if step in complete or step < newest_kept:
                log.info("Deleting step %d from %s", step, self.url)
                self.delete_step(step)

    # ---- reading into local disk ----

    def download_step(self, step: int) -> str:
        """Copies a complete step into local_root/<step> (atomically: temp dir + rename)."""
        marker_blob = self.bucket.blob(self.url.key(step, MARKER))
        if not marker_blob.exists():
            raise FileNotFoundError(f"Step {step} in {self.url} has no {MARKER}: incomplete upload, not restorable")
        marker = json.loads(marker_blob.download_as_bytes())
        final = os.path.join(self.local_root, str(step))
        if os.path.isdir(final):
            return final
        incoming = self._side_dir("incoming", step)
        shutil.rmtree(incoming, ignore_errors=True)
        bucket = self.bucket

        def get(item):
            rel, size = item
            dst = os.path.join(incoming, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            bucket.blob(self.url.key(step, rel)).download_to_filename(dst)
            if os.path.getsize(dst) != size:
                raise OSError(f"{self.url.key(step, rel)}: got {os.path.getsize(dst)} bytes, marker says {size}")

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(get, marker["files"].items()))
        os.makedirs(self.local_root, exist_ok=True)
        os.rename(incoming, final)
        log.info("Downloaded step %d from %s in %.1fs", step, self.url, time.monotonic() - start)
        return final


class Uploader:
    """Background thread: uploads each submitted step once `ready()` says Orbax finished it."""

    def __init__(self, mirror: CheckpointMirror, keep: Callable[[], set[int]], poll_s: float = 0.05):
        self.mirror = mirror
        self._keep = keep
        self._poll_s = poll_s
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._closed = threading.Event()
        self.uploaded: list[int] = []
        self.throughput: list[float] = []
        self._thread = threading.Thread(target=self._run, name="gcs-uploader", daemon=True)
        self._thread.start()

    def submit(self, step: int, ready: Callable[[], bool], abandoned: Callable[[], bool]) -> None:
        self._queue.put((step, ready, abandoned))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                step, ready, abandoned = item
                while not ready():
                    if abandoned():
                        log.warning("Step %d never finished locally; not uploading it", step)
                        break
                    time.sleep(self._poll_s)
                else:
                    self.throughput.append(self.mirror.upload_step(step))
                    self.uploaded.append(step)
                    self.mirror.prune(self._keep() | {step})
            except FileNotFoundError as e:  # keep-N removed it first: a newer step follows
                log.warning("Skipping upload: %s", e)
            except BaseException as e:  # surfaced by drain()
                log.exception("Upload to %s failed", self.mirror.url)
                self._error = e
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Blocks until every submitted step is uploaded (or abandoned); re-raises upload errors."""
        self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"Checkpoint upload to {self.mirror.url} failed: {error}") from error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class Markers:
    """Existence checks for single objects (the launcher's DONE/FAILED markers)."""

    def __init__(self, client=None):
        self._client = client

    def exists(self, url: str) -> bool:
        parsed = GcsUrl.parse(url)
        if self._client is None:
            self._client = make_client()
        return self._client.bucket(parsed.bucket).blob(parsed.prefix).exists()
