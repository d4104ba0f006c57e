"""TrainState: everything a training step changes, as one pytree (for jit, donation, Orbax).

The model is split once into
  graphdef   static structure (LoRA layers, dtypes, shapes)
  params     what the optimizer trains: LoRA adapters, or every Param in full fine-tuning
  rng        nnx.RngState of dropout streams (empty without dropout)
  frozen     the rest: base weights (plain, or quantised) and anything else
TrainState holds step, params, opt_state and rng; `frozen` is passed to the step beside
it and never donated, so a checkpoint of TrainState plus the base weights is a full run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from reactor_core.lora.lora import TRAINABLE


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: nnx.State
    opt_state: optax.OptState
    rng: nnx.State


@dataclasses.dataclass
class SplitModel:
    """A model split for functional training; `merge` rebuilds a usable module."""

    graphdef: Any
    eval_graphdef: Any  # dropout off
    frozen: nnx.State
    trainable_filter: Any
    reference_graphdef: Any = None  # DPO reference model from a separate checkpoint

    def merge(self, params: nnx.State, rng: nnx.State, *, train: bool = True) -> nnx.Module:
        return nnx.merge(self.graphdef if train else self.eval_graphdef, params, rng, self.frozen)


def trainable_filter(use_lora: bool):
    return TRAINABLE if use_lora else nnx.Param


def split_model(model: nnx.Module, *, use_lora: bool) -> tuple[SplitModel, nnx.State, nnx.State]:
    """(SplitModel, trainable params, rng state). The model object itself is left as it was."""
    wanted = trainable_filter(use_lora)
    graphdef, params, rng, frozen = nnx.split(model, wanted, nnx.RngState, ...)
    eval_graphdef = _eval_graphdef(model, wanted)
    return SplitModel(graphdef, eval_graphdef, frozen, wanted), params, rng


def _eval_graphdef(model: nnx.Module, wanted):
    dropouts = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Dropout)]
    before = [d.deterministic for d in dropouts]
    for d in dropouts:
        d.deterministic = True
    try:
        return nnx.split(model, wanted, nnx.RngState, ...)[0]
    finally:
        for d, was in zip(dropouts, before):
            d.deterministic = was


def init_state(params: nnx.State, rng: nnx.State, tx: optax.GradientTransformation) -> TrainState:
    # Adapters train in float32 whatever the compute dtype (master weights).
    params = jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)


def count_params(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def tree_bytes(tree) -> int:
    return sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
