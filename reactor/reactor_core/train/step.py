"""The jitted train and eval steps.

train_step(state, frozen, reference, batch) -> (state, metrics): batch leaves carry a
leading micro-batch axis (A, B, T); gradients of the A micro-batches are summed inside
one compiled step (lax.scan) and normalised by the total weight, so accumulation is exact
and costs no host round trip. `state` is donated: its buffers are reused in place.
Metrics stay on device; hooks fetch them when they log.

With a Placement (state.place_on_mesh) both steps are jitted with in/out shardings, split
each host batch over data x fsdp (axis 1 of (A, B, T), axis 0 of eval's (B, T)), and trace
and run under the strategy's activation rules; the call signatures stay the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from reactor_core.dist import sharding as sharding_lib
from reactor_core.train.state import Placement, SplitModel, TrainState


def _weighted(loss, weight, metrics):
    out = {f"{k}_sum": v * weight for k, v in metrics.items()}
    out["weight"] = weight
    return out


def _reference_model(split: SplitModel, reference):
    return None if reference is None else nnx.merge(split.reference_graphdef, reference)


def _on_mesh(jitted, placement: Placement, batch_axis: int):
    """jitted(*args, batch) with the batch split over the mesh and the activation rules on."""
    mesh, rules = placement.mesh, placement.rules
    # One device: jit moves the host batch to the device of the (committed) state, as before meshes.
    split_batch = mesh.size > 1

    def step(*args):
        *arrays, batch = args
        if split_batch:
            batch = sharding_lib.shard_batch(batch, mesh, batch_axis=batch_axis)
        with sharding_lib.activation_sharding(mesh, rules):
            return jitted(*arrays, batch)

    step.jitted = jitted
    return step


def make_train_step(
    split: SplitModel, objective, tx: optax.GradientTransformation, schedule, placement: Placement | None = None
):
    graphdef = split.graphdef

    def micro_grads(params, rng, frozen, reference, batch):
        def f(p, r):
            # Fresh rng variables belong to this trace, so dropout may advance them here.
            r = jax.tree.map(lambda x: x, r)
            model = nnx.merge(graphdef, p, r, frozen)
            loss, weight, metrics = objective(model, batch, _reference_model(split, reference))
            return loss * weight, (_weighted(loss, weight, metrics), nnx.state(model, nnx.RngState))

        (_, (stats, new_rng)), grads = jax.value_and_grad(f, has_aux=True)(params, rng)
        return grads, stats, new_rng

    def train_step(state: TrainState, frozen, reference, batch):
        accum = jax.tree.leaves(batch)[0].shape[0]
        first = jax.tree.map(lambda x: x[0], batch)
        grads, stats, rng = micro_grads(state.params, state.rng, frozen, reference, first)
        if accum > 1:

            def body(carry, micro):
                g_acc, s_acc, r = carry
                g, s, r = micro_grads(state.params, r, frozen, reference, micro)
                return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, s), r), None

            rest = jax.tree.map(lambda x: x[1:], batch)
            (grads, stats, rng), _ = jax.lax.scan(body, (grads, stats, rng), rest)
        total = stats.pop("weight")
        inv = 1.0 / jnp.maximum(total, 1e-8)
        grads = jax.tree.map(lambda g: g * inv.astype(g.dtype), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {k.removesuffix("_sum"): v * inv for k, v in stats.items()}
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["lr"] = schedule(state.step)
        metrics["weight"] = total
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        return new_state, metrics

    if placement is None:
        return jax.jit(train_step, donate_argnums=(0,))
    jitted = jax.jit(
        train_step,
        donate_argnums=(0,),
        # The batch's shardings come from shard_batch (leaves differ in rank).
        in_shardings=(placement.state, placement.frozen, placement.reference, None),
        out_shardings=(placement.state, placement.replicated),
    )
    return _on_mesh(jitted, placement, batch_axis=1)


def make_eval_step(split: SplitModel, objective, placement: Placement | None = None):
    """eval_step(params, rng, frozen, reference, batch) -> weighted metric sums (dropout off)."""
    graphdef = split.eval_graphdef

    def eval_step(params, rng, frozen, reference, batch):
        model = nnx.merge(graphdef, params, rng, frozen)
        loss, weight, metrics = objective(model, batch, _reference_model(split, reference))
        return _weighted(loss, weight, metrics)

    if placement is None:
        return jax.jit(eval_step)
    jitted = jax.jit(
        eval_step,
        in_shardings=(placement.state.params, placement.state.rng, placement.frozen, placement.reference, None),
        out_shardings=placement.replicated,
    )
    return _on_mesh(jitted, placement, batch_axis=0)
