"""JAX's persistent compilation cache under the Prime store, so a second launch compiles nothing.

    directory = compile_cache.enable(store)   # $PRIME_COMPILE_CACHE, else <store>/xla-cache

Every program the generation engine warms up is written there on first use and read back by
later processes with the same model shapes, JAX and CPU. A cache directory the user already
configured (jax_compilation_cache_dir) is kept.
"""

from __future__ import annotations

import os

from reactor_core import xla_cache

from jarvis_prime.store import Store

ENV = "PRIME_COMPILE_CACHE"


def directory(store: Store) -> str:
    return os.path.expanduser(os.environ.get(ENV) or os.path.join(store.root, "xla-cache"))


def enable(store: Store) -> str | None:
    """Points JAX at the cache directory (created if missing); None when it cannot be written."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    path = directory(store)
    return path if xla_cache.use(path) else None
