"""Reactor Core: the JAX/Flax training engine of Ironcliw.

Heavy pieces import lazily, so `import reactor_core` stays cheap and inference-only
users never load the training stack (optax, orbax, google-cloud-storage).
"""

import importlib

__version__ = "1.0.0"

_LAZY = {
    "Trainer": "reactor_core.train.trainer",
    "TrainingConfig": "reactor_core.train.config",
    "Preempted": "reactor_core.train.hooks",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reactor_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
