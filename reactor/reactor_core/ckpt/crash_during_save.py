"""Helper for checkpoint_test: saves step 1, starts an async save of step 2, then dies (SIGKILL).

    python crash_during_save.py DIRECTORY
"""

import os
import signal
import sys

import jax.numpy as jnp

from reactor_core.ckpt.checkpoint import CheckpointManager


def main() -> int:
    manager = CheckpointManager(sys.argv[1], keep=3, config={"run": "crash"})
    state = {"w": jnp.arange(8, dtype=jnp.float32)}
    manager.save(1, state, {"next": 1})
    manager.wait()
    big = {"w": jnp.ones((64, 1024, 1024), jnp.float32)}  # 256 MB: still being written below
    manager.save(2, big, {"next": 2})
    assert manager.save_in_progress
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


if __name__ == "__main__":
    sys.exit(main())
