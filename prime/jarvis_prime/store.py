"""The local model store: `$PRIME_HOME` (default `<user cache dir>/prime`).

    $PRIME_HOME/models/<name>/            a Hugging Face directory per catalogue model
                                          (put weights here yourself, or gs:// / Hub fill it)
    $PRIME_HOME/converted/<key>/          what a backend made from a source (MLX 4/8-bit dirs,
                                          merged adapters), keyed by source fingerprint

Converted entries are written to a temporary sibling and renamed into place, so a
crashed conversion never leaves a half-written directory that a later load trusts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

# Files whose bytes define a model directory's content, for fingerprints.
_CONTENT_SUFFIXES = (".json", ".safetensors", ".model", ".gguf", ".jinja", ".txt")


def default_home() -> str:
    """`$PRIME_HOME`, else the platform's user cache dir + /prime."""
    if os.environ.get("PRIME_HOME"):
        return os.path.expanduser(os.environ["PRIME_HOME"])
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "prime")


def fingerprint(path: str, *extra: object) -> str:
    """A short hash of a directory's files (names, sizes, mtimes) and `extra` values."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(_CONTENT_SUFFIXES):
                continue
            full = os.path.join(root, name)
            st = os.stat(full)
            h.update(f"{os.path.relpath(full, path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for value in extra:
        h.update(f"{value!r}\n".encode())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Store:
    root: str

    @classmethod
    def default(cls) -> Store:
        return cls(default_home())

    def model_dir(self, name: str) -> str:
        return os.path.join(self.root, "models", name)

    def converted_dir(self, kind: str, key: str) -> str:
        return os.path.join(self.root, "converted", f"{kind}-{key}")

    def has_converted(self, kind: str, key: str) -> bool:
        return os.path.exists(os.path.join(self.converted_dir(kind, key), "prime_converted.json"))

    @contextlib.contextmanager
    def writing(self, kind: str, key: str, meta: dict | None = None) -> Iterator[str]:
        """Yields a temporary directory; on success it becomes `converted_dir(kind, key)`."""
        final = self.converted_dir(kind, key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{kind}-{key}-", dir=os.path.dirname(final))
        try:
            yield tmp
            with open(os.path.join(tmp, "prime_converted.json"), "w") as f:
                json.dump({"kind": kind, "key": key, **(meta or {})}, f, indent=1)
            if os.path.exists(final):  # another process won the race; theirs is as good
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
