"""The one module that talks to Google Cloud Storage: download a model directory from gs://.

google-cloud-storage is optional and not a Bazel dependency of Prime: it is imported only
when a gs:// source is actually used, and its absence is a clear error naming the package.
"""

from __future__ import annotations

import os

from jarvis_prime.errors import ModelNotAvailableError


def split_uri(uri: str) -> tuple[str, str]:
    """ "gs://bucket/a/b" -> ("bucket", "a/b")."""
    if not uri.startswith("gs://"):
        raise ModelNotAvailableError(f"{uri!r} is not a gs:// URI (expected gs://bucket/path)")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ModelNotAvailableError(f"{uri!r} names no bucket (expected gs://bucket/path)")
    return bucket, prefix.strip("/")


def client():
    try:
        from google.cloud import storage
    except ImportError:
        raise ModelNotAvailableError(
            "Reading models from gs:// needs the google-cloud-storage package: pip install google-cloud-storage"
        ) from None
    return storage.Client()


def download_dir(uri: str, target: str, *, storage_client=None) -> int:
    """Copies every object under `uri` into `target` (a fresh directory); returns the file count.

    Files land under a temporary name first, so an interrupted download is never mistaken
    for a complete model directory.
    """
    bucket_name, prefix = split_uri(uri)
    storage_client = storage_client or client()
    blobs = [b for b in storage_client.list_blobs(bucket_name, prefix=prefix + "/" if prefix else None)]
    blobs = [b for b in blobs if not b.name.endswith("/")]
    if not blobs:
        raise ModelNotAvailableError(f"{uri} holds no files; upload the model's Hugging Face directory there")
    tmp = target + ".partial"
    os.makedirs(tmp, exist_ok=True)
    for blob in blobs:
        rel = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
        dest = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        blob.download_to_filename(dest)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(tmp, target)
    return len(blobs)
