"""Helper for gcs_test: saves one step of N floats to gs:// and waits for the upload.

    STORAGE_EMULATOR_HOST=... python kill_uploader.py gs://BUCKET/PATH STAGING_DIR STEP N [hold]

With `hold`, the first file to finish uploading prints "uploading" and then stalls its upload
thread, so the step can never get its marker: the test's SIGKILL then lands mid-upload for
certain, whatever the machine's speed (racing a real upload, it sometimes lost).
"""

import sys
import threading

import jax.numpy as jnp
from google.cloud.storage import Blob

from reactor_core.ckpt.checkpoint import CheckpointManager


def hold_after_first_upload() -> None:
    real = Blob.upload_from_filename
    first = threading.Lock()

    def upload(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if first.acquire(blocking=False):
            print("uploading", flush=True)
            threading.Event().wait()  # until the process is killed
        return result

    Blob.upload_from_filename = upload


def main() -> int:
    url, staging, step, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if sys.argv[5:] == ["hold"]:
        hold_after_first_upload()
    manager = CheckpointManager(url, keep=3, config={"run": "gcs"}, staging_dir=staging)
    manager.save(step, {"w": jnp.full((n,), float(step), jnp.float32)}, {"next": step})
    print("saving", flush=True)
    manager.wait()
    print("uploaded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
