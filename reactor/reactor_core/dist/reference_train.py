"""A minimal sharded training loop (masked CE + AdamW) that the scale tests and benches share.

It is the yardstick for sharding, multi-host and resume tests, not the product trainer
(reactor_core/train owns that): same model, same jit-with-shardings pattern, nothing else.

    run = ShardedRun.create(LlamaConfig.preset("tiny"), mesh=make_mesh(MeshConfig()), strategy="fsdp")
    for batch in synthetic_batches(steps=3, batch_size=8, seq_len=32, vocab=256):
        loss = run.step(batch)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from reactor_core.dist import sharding as sharding_lib
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama


def masked_ce(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean cross-entropy over positions where mask is 1. logits (B, T, V), targets/mask (B, T)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)  # (B, T)
    mask = mask.astype(jnp.float32)
    return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def synthetic_batches(*, steps: int, batch_size: int, seq_len: int, vocab: int, seed: int = 0, start: int = 0):
    """Deterministic batches: batch i depends only on (seed, i), so a resumed run sees the same data."""
    for i in range(start, start + steps):
        rng = np.random.default_rng([seed, i])
        tokens = rng.integers(3, vocab, (batch_size, seq_len + 1), dtype=np.int32)  # (B, T+1)
        mask = (rng.random((batch_size, seq_len)) < 0.9).astype(np.float32)  # (B, T)
        yield {"tokens": tokens, "mask": mask}


def init_params(config: LlamaConfig, seed: int = 0):
    """(graphdef, params) of a freshly initialized model; params keep logical-axis metadata."""
    graphdef, params = nnx.split(Llama(config, rngs=nnx.Rngs(seed)), nnx.Param)
    return graphdef, params


def make_step(graphdef, tx: optax.GradientTransformation):
    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch["tokens"][:, :-1])  # (B, T, V)
        return masked_ce(logits, batch["tokens"][:, 1:], batch["mask"])

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


@dataclasses.dataclass
class ShardedRun:
    """Params, optimizer state and a jitted step, laid out on `mesh` (None: one device, no jit shardings)."""

    params: Any
    opt_state: Any
    mesh: Any
    rules: Any
    _step: Any

    @classmethod
    def create(cls, config: LlamaConfig, *, mesh=None, strategy: str = "fsdp", lr: float = 1e-3, seed: int = 0):
        graphdef, params = init_params(config, seed)
        tx = optax.adamw(lr, weight_decay=0.01)
        step = make_step(graphdef, tx)
        if mesh is None:
            return cls(params, tx.init(params), None, None, jax.jit(step, donate_argnums=(0, 1)))
        rules = sharding_lib.rules_for(strategy)
        p_sh = sharding_lib.param_shardings(params, mesh, rules)
        o_sh = sharding_lib.opt_state_shardings(jax.eval_shape(tx.init, params), params, p_sh, mesh)
        # Initialize the optimizer state directly in its sharded layout.
        params = jax.device_put(params, p_sh)
        opt_state = jax.jit(tx.init, out_shardings=o_sh)(params)
        jitted = jax.jit(
            step,
            in_shardings=(p_sh, o_sh, sharding_lib.batch_sharding(mesh)),
            out_shardings=(p_sh, o_sh, sharding_lib.replicated(mesh)),
            donate_argnums=(0, 1),
        )
        return cls(params, opt_state, mesh, rules, jitted)

    def step(self, batch: dict[str, np.ndarray]) -> jax.Array:
        if self.mesh is None:
            self.params, self.opt_state, loss = self._step(self.params, self.opt_state, batch)
            return loss
        with sharding_lib.activation_sharding(self.mesh, self.rules):
            arrays = sharding_lib.shard_batch(batch, self.mesh)
            self.params, self.opt_state, loss = self._step(self.params, self.opt_state, arrays)
        return loss


def free_port() -> int:
    """A free TCP port on loopback (for a test's coordinator)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(cmds: list[list[str]], env: dict, *, timeout: float = 300) -> list[tuple[int, str]]:
    """Starts every command at once (the processes of one distributed run) and waits for all.

    Returns (exit code, combined stdout+stderr) per command; stragglers are killed on error.
    """
    import subprocess

    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for cmd in cmds
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outputs)]
