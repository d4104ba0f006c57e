"""Learning-rate schedules and clipping."""

import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reactor_core.train import optim
from reactor_core.train.config import OptimConfig


def _lrs(schedule, n):
    return np.array([float(schedule(i)) for i in range(n + 1)])


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_warmup_then_decay(kind):
    cfg = OptimConfig(learning_rate=1e-3, warmup_steps=10, schedule=kind, final_lr_ratio=0.1)
    lrs = _lrs(optim.learning_rate_schedule(cfg, 100), 100)
    np.testing.assert_allclose(lrs[:11], np.linspace(0, 1e-3, 11), rtol=1e-5, atol=1e-12)
    assert lrs[100] == pytest.approx(1e-4, rel=1e-4)
    assert np.all(np.diff(lrs[10:]) <= 1e-12)
    mid = lrs[55]
    assert mid == pytest.approx(5.5e-4, rel=1e-3)  # halfway: both shapes meet at the mean


def test_constant_and_no_warmup():
    lrs = _lrs(optim.learning_rate_schedule(OptimConfig(schedule="constant", warmup_steps=0), 50), 50)
    np.testing.assert_allclose(lrs, 2e-4)


def test_warmup_longer_than_run_is_clamped():
    lrs = _lrs(optim.learning_rate_schedule(OptimConfig(warmup_steps=100), 5), 5)
    assert lrs.max() <= 2e-4 + 1e-12 and np.isfinite(lrs).all()


def test_clipping_bounds_the_update():
    cfg = OptimConfig(
        learning_rate=1.0, warmup_steps=0, schedule="constant", max_grad_norm=1.0, b1=0.0, b2=0.0, eps=0.0
    )
    tx, _ = optim.build_optimizer(cfg, 10)
    params = {"w": jnp.zeros((3, 3))}
    grads = {"w": jnp.full((3, 3), 100.0)}
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    # Adam with b1=b2=0 normalises each entry; clipping happens first and keeps the sign.
    assert optax.tree.norm(updates) == pytest.approx(3.0, rel=1e-4)


def test_weight_decay_skips_vectors():
    cfg = OptimConfig(learning_rate=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5, max_grad_norm=0)
    tx, _ = optim.build_optimizer(cfg, 10)
    params = {"matrix": jnp.ones((2, 2)), "norm": jnp.ones((2,))}
    zeros = {"matrix": jnp.zeros((2, 2)), "norm": jnp.zeros((2,))}
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert float(updates["matrix"][0, 0]) == pytest.approx(-0.05)
    assert float(updates["norm"][0]) == 0.0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
