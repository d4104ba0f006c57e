"""Logical axis names used by reactor's models; the sharding rules map them to mesh axes.

Activations are annotated with `constrain`, a no-op unless a rules table is active
(`flax.linen.logical_axis_rules(...)` plus a mesh), so single-device code pays nothing.
"""

from __future__ import annotations

import flax.linen as nn
from flax import nnx

BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
HEAD_DIM = "head_dim"
MLP = "mlp"
VOCAB = "vocab"


def constrain(x, axes: tuple[str | None, ...]):
    """Annotates an activation with logical axes, e.g. `constrain(h, (BATCH, LENGTH, EMBED))`."""
    return nn.with_logical_constraint(x, axes)


def partitioned(init, axes: tuple[str | None, ...]):
    """An initializer whose parameter carries logical axis names as sharding metadata."""
    # Names only: the mesh is applied later by the sharding rules, not at creation.
    return nnx.with_partitioning(init, axes, eager_sharding=False)
