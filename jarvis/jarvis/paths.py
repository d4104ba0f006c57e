"""User-supplied paths: relative ones mean the user's directory, also under `bazel run`."""

from __future__ import annotations

import os


def user_path(path: str) -> str:
    """`bazel run` starts programs in the runfiles tree; BUILD_WORKING_DIRECTORY is where
    the user typed the command, so relative paths resolve against it."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd(), path)
