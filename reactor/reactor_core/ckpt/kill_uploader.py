"""Helper for gcs_test: saves one step of N floats to gs:// and waits for the upload.

    STORAGE_EMULATOR_HOST=... python kill_uploader.py gs://BUCKET/PATH STAGING_DIR STEP N
"""

import sys

import jax.numpy as jnp

from reactor_core.ckpt.checkpoint import CheckpointManager


def main() -> int:
    url, staging, step, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    manager = CheckpointManager(url, keep=3, config={"run": "gcs"}, staging_dir=staging)
    manager.save(step, {"w": jnp.full((n,), float(step), jnp.float32)}, {"next": step})
    print("saving", flush=True)
    manager.wait()
    print("uploaded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
