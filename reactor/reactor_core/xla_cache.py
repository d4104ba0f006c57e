"""JAX's persistent compilation cache, pointed at one directory: the one place that sets it.

    if xla_cache.use(path):   # created if missing; False when it cannot be written
        ...                   # every program compiled from now on is written there and read back

Used by Prime's model loading (the generation engine's programs) and by the trainer (its
train and eval steps); each decides where its directory lives.
"""

from __future__ import annotations

import os


def use(path: str) -> bool:
    """Points JAX at `path` and caches every program, however quick to compile (a cold start
    or a resume pays for all of them). False, and nothing changed, when `path` cannot be written."""
    import jax  # here, not at import: Prime imports this on machines that may run MLX alone

    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    if not os.access(path, os.W_OK):
        return False
    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True
