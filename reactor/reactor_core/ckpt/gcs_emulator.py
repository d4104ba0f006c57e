"""A real GCS server on loopback (PyPI `gcp-storage-emulator`) for tests and benches.

    with LocalGcs(bucket="ckpt") as gcs:   # sets STORAGE_EMULATOR_HOST while open
        manager = CheckpointManager("gs://ckpt/run1", ...)
"""

from __future__ import annotations

import logging
import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalGcs:
    def __init__(self, bucket: str = "reactor-test", *, port: int | None = None):
        self.bucket = bucket
        self.port = port or free_port()
        self._server = None
        self._saved_env: str | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalGcs:
        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
        self._server = create_server("127.0.0.1", self.port, in_memory=True, default_bucket=self.bucket)
        self._server.start()
        self._saved_env = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._saved_env is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = self._saved_env

    def __enter__(self) -> LocalGcs:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
