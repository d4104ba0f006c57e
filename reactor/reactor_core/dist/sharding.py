"""Sharding rules: one table per strategy maps the model's logical axes onto mesh axes.

The model names axes only (`batch`, `length`, `embed`, `heads`, `kv_heads`, `mlp`, `vocab`,
`head_dim`; see models/axes.py). A rules table is an ordered tuple of (logical, mesh) pairs
with Flax's precedence semantics (`flax.linen.logical_to_mesh_axes`): earlier rules win and a
mesh axis is used at most once per array. So `batch` comes first: an activation
(batch, length, embed) gets batch over data x fsdp and leaves `embed` unsharded, while a
weight (vocab, embed) gets embed over fsdp.

    rules = RULES[mesh_config.strategy]
    graphdef, params = nnx.split(model, nnx.Param)
    p_sh = param_shardings(params, mesh, rules)
    o_sh = opt_state_shardings(jax.eval_shape(tx.init, params), params, p_sh, mesh)
    step = jax.jit(train_step, in_shardings=(p_sh, o_sh, batch_sharding(mesh)),
                   out_shardings=(p_sh, o_sh, replicated(mesh)))
    with activation_sharding(mesh, rules):
        params, opt_state, loss = step(params, opt_state, shard_batch(batch, mesh))
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

BATCH_AXES = ("data", "fsdp")

# One table per strategy. Logical names without a rule (length, head_dim, LoRA ranks...) stay
# unsharded; so does anything a mesh axis of size 1 would "split".
RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "dp": (("batch", BATCH_AXES),),
    "fsdp": (
        ("batch", BATCH_AXES),
        ("embed", "fsdp"),
    ),
    "fsdp_tp": (
        ("batch", BATCH_AXES),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
    ),
}


def rules_for(strategy: str) -> tuple[tuple[str, Any], ...]:
    try:
        return RULES[strategy]
    except KeyError:
        raise ValueError(f"Unknown sharding strategy {strategy!r}; known: {sorted(RULES)}") from None


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def logical_to_spec(names, rules, *, shape=None, mesh=None) -> P:
    """PartitionSpec for an array with logical axis `names`.

    With `shape` and `mesh`, a dimension whose size does not divide by its mesh axes is left
    unsharded (e.g. SmolLM2's 3 kv heads on tensor=2) instead of failing at device_put.
    """
    if not names:
        return P()
    if shape is not None and len(shape) != len(names):
        # e.g. a quantized kernel stored packed: its names describe the unpacked weight.
        log.warning("Replicating an array of shape %s: its logical axes %s do not match", shape, names)
        return P()
    spec = list(nn.logical_to_mesh_axes(tuple(names), rules))
    if shape is not None and mesh is not None:
        for i, axes in enumerate(spec):
            if axes is None:
                continue
            ways = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
            if shape[i] % ways:
                log.warning("Not sharding dim %d (size %d) of %s over %s: not divisible", i, shape[i], names, axes)
                spec[i] = None
    # Trailing Nones are dropped so specs compare equal to their canonical form.
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _variable_names(v: nnx.Variable):
    meta = v.get_metadata()
    return meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")


def param_shardings(tree, mesh, rules):
    """NamedShardings for a tree of parameters, with the same structure as `tree`.

    `tree` is an nnx State/Module split (leaves are nnx.Variable carrying logical-axis
    metadata, as `nnx.get_named_sharding` expects) or any pytree of arrays (replicated).
    """

    def one(x):
        if _is_variable(x):
            value = x.get_value()
            spec = logical_to_spec(_variable_names(x), rules, shape=getattr(value, "shape", None), mesh=mesh)
            return x.replace(NamedSharding(mesh, spec))
        return replicated(mesh)

    return jax.tree.map(one, tree, is_leaf=_is_variable)


def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path(path) -> tuple[str, ...]:
    return tuple(_key_str(k) for k in path)


def opt_state_shardings(opt_state, params, param_sh, mesh):
    """Shardings for an optimizer state: each leaf that mirrors a parameter (Adam's mu, nu...)
    takes that parameter's sharding; everything else (step counts, scalars) is replicated.

    A leaf mirrors a parameter when the tail of its tree path equals the parameter's path and
    the shapes agree; that holds for optax chains, masks and multi_transform alike.
    """
    by_path = {}
    for (path, leaf), sh in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(param_sh), strict=True):
        by_path[_path(path)] = (np.shape(leaf), sh)
    rep = replicated(mesh)

    def one(path, leaf):
        keys = _path(path)
        for i in range(len(keys)):
            hit = by_path.get(keys[i:])
            if hit is not None and hit[0] == np.shape(leaf):
                return hit[1]
        return rep

    return jax.tree.map_with_path(one, opt_state)


def place(tree, shardings):
    """device_put(tree, shardings) that also works with several processes.

    Single process: plain device_put. Several: every process holds the same full values
    (same seed, same checkpoint) and fills only its own devices' slices, so nothing is
    gathered and nothing checks equality across hosts (device_put would, per leaf).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(one(jax.random.key_data(x), sharding), impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def gather(tree, mesh):
    """The tree resharded to fully replicated arrays (a collective: every process calls it),
    so each process can read whole values, e.g. to export them."""
    return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)


def batch_ways(mesh) -> int:
    """How many ways the batch is split: data x fsdp."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh, ndim: int = 2, batch_axis: int = 0) -> NamedSharding:
    """The batch axis split over data x fsdp, the others (length, micro-batch...) unsplit."""
    spec = [None] * ndim
    spec[batch_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def shard_batch(batch: Mapping[str, Any], mesh, *, batch_axis: int = 0) -> dict[str, Any]:
    """Global numpy batch (nested dicts allowed) -> global jax Arrays split over data x fsdp.

    batch_axis: 1 for gradient-accumulation batches shaped (A, B, T).
    Works with several processes: each one only materializes the slices of its own devices,
    so every process must hold the same global batch (deterministic loader, same seed).
    """
    ways = batch_ways(mesh)

    def one(path, value):
        value = np.asarray(value)
        if value.shape[batch_axis] % ways:
            raise ValueError(
                f"Batch {jax.tree_util.keystr(path)}: size {value.shape[batch_axis]} is not divisible by "
                f"data x fsdp = {ways}"
            )
        sharding = batch_sharding(mesh, value.ndim, batch_axis)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map_with_path(one, dict(batch))


def shard_local_batch(batch: Mapping[str, Any], mesh, *, batch_axis: int = 0) -> dict[str, Any]:
    """This process's slice of the batch (what a per-host loader yields) -> global Arrays."""

    def one(value):
        value = np.asarray(value)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim, batch_axis), value)

    return jax.tree.map(one, dict(batch))


@contextlib.contextmanager
def activation_sharding(mesh, rules) -> Iterator[None]:
    """Activates the mesh and rules so `axes.constrain(...)` in the model takes effect.

    Trace (first call) and run jitted steps inside it: Flax's rules are not part of jit's
    cache key, so a step traced outside would silently keep unconstrained activations.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def describe(shardings) -> dict[str, list]:
    """{"model.layers.0.mlp.up_proj.kernel": ["fsdp", "tensor"], ...}: a JSON-able table."""
    table = {}
    for path, sh in jax.tree.leaves_with_path(shardings):
        keys = [k for k in _path(path) if k != "value"]
        spec = [list(a) if isinstance(a, tuple) else a for a in sh.spec]
        while spec and spec[-1] is None:  # P("fsdp", None) == P("fsdp")
            spec.pop()
        table[".".join(keys)] = spec
    return table
