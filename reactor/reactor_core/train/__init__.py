"""Training: losses, trainer, optimisation.

    from reactor_core.train import Trainer, TrainingConfig, Preempted

Names import lazily, so `reactor_core.train.losses` and friends stay light.
"""

import importlib

_LAZY = {
    "Trainer": "reactor_core.train.trainer",
    "TrainResult": "reactor_core.train.trainer",
    "TrainingConfig": "reactor_core.train.config",
    "Preempted": "reactor_core.train.hooks",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reactor_core.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
