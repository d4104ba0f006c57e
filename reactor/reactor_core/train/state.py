"""TrainState: everything a training step changes, as one pytree (for jit, donation, Orbax).

The model is split once into
  graphdef   static structure (LoRA layers, dtypes, shapes)
  params     what the optimizer trains: LoRA adapters, or every Param in full fine-tuning
  rng        nnx.RngState of dropout streams (empty without dropout)
  frozen     the rest: base weights (plain, or quantised) and anything else
TrainState holds step, params, opt_state and rng; `frozen` is passed to the step beside
it and never donated, so a checkpoint of TrainState plus the base weights is a full run.

`place_on_mesh` lays all of it out on a device mesh (Placement: one NamedSharding per
array, from the model's logical axis names and the strategy's rules table).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from reactor_core.dist import sharding as sharding_lib
from reactor_core.dist.mesh import MeshConfig, make_mesh
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
    params = _float32(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run's arrays live: the mesh, its rules table and a NamedSharding per array.

    state mirrors TrainState (params: from logical axis names; Adam's mu/nu: like their
    params; step, counts and rng: replicated). frozen and reference mirror those States;
    what has no logical names (QLoRA's packed codes and scales) is replicated.
    """

    mesh: Any  # jax.sharding.Mesh
    rules: tuple
    state: TrainState  # of NamedSharding
    frozen: Any
    reference: Any = None

    @property
    def replicated(self):
        return sharding_lib.replicated(self.mesh)

    def describe(self) -> dict[str, dict[str, list]]:
        """{"params": {"model.layers.0.self_attn.q_proj.lora_a": ["fsdp"], ...}, "frozen": {...}}."""
        return {"params": sharding_lib.describe(self.state.params), "frozen": sharding_lib.describe(self.frozen)}


def place_on_mesh(
    mesh_config: MeshConfig,
    params: nnx.State,
    rng: nnx.State,
    frozen: nnx.State,
    reference: nnx.State | None,
    tx: optax.GradientTransformation,
    *,
    devices=None,
) -> tuple[Placement, TrainState, nnx.State, nnx.State | None]:
    """(placement, TrainState, frozen, reference), each array on the mesh over `devices`.

    Like init_state, but the optimizer state is created directly in its sharded layout.
    """
    mesh = make_mesh(mesh_config, devices)
    rules = sharding_lib.rules_for(mesh_config.strategy)
    params = _float32(params)
    p_sh = sharding_lib.param_shardings(params, mesh, rules)
    o_sh = sharding_lib.opt_state_shardings(jax.eval_shape(tx.init, params), params, p_sh, mesh)
    rep = sharding_lib.replicated(mesh)
    state_sh = TrainState(step=rep, params=p_sh, opt_state=o_sh, rng=jax.tree.map(lambda _: rep, rng))
    placement = Placement(
        mesh=mesh,
        rules=rules,
        state=state_sh,
        frozen=sharding_lib.param_shardings(frozen, mesh, rules),
        reference=None if reference is None else sharding_lib.param_shardings(reference, mesh, rules),
    )
    params = sharding_lib.place(params, p_sh)
    state = TrainState(
        step=sharding_lib.place(jnp.zeros((), jnp.int32), rep),
        params=params,
        opt_state=jax.jit(tx.init, out_shardings=o_sh)(params),
        rng=sharding_lib.place(rng, state_sh.rng),
    )
    frozen = sharding_lib.place(frozen, placement.frozen)
    if reference is not None:
        reference = sharding_lib.place(reference, placement.reference)
    return placement, state, frozen, reference


def _float32(params: nnx.State) -> nnx.State:
    # Adapters train in float32 whatever the compute dtype (master weights).
    return jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def count_params(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def tree_bytes(tree) -> int:
    return sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
