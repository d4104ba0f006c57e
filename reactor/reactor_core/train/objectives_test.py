"""The fused token log-probs agree with losses.py (values and gradients)."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.train import losses, objectives


def _inputs(b=3, t=7, v=50, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    logits = 3 * jax.random.normal(k1, (b, t, v))
    targets = jax.random.randint(k2, (b, t), 0, v)
    weights = (jax.random.uniform(k3, (b, t)) > 0.3).astype(jnp.float32)
    return logits, targets, weights


def test_token_log_probs_match():
    logits, targets, _ = _inputs()
    np.testing.assert_allclose(
        objectives.token_log_probs(logits, targets), losses.token_log_probs(logits, targets), atol=1e-5
    )


def test_cross_entropy_and_gradient_match():
    logits, targets, weights = _inputs()
    ours, n = objectives.cross_entropy(logits, targets, weights)
    ref, n_ref = losses.cross_entropy(logits, targets, weights)
    assert float(n) == float(n_ref)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    g = jax.grad(lambda x: objectives.cross_entropy(x, targets, weights)[0])(logits)
    g_ref = jax.grad(lambda x: losses.cross_entropy(x, targets, weights)[0])(logits)
    np.testing.assert_allclose(g, g_ref, atol=1e-7)


def test_empty_weights_give_zero_loss():
    logits, targets, weights = _inputs()
    loss, n = objectives.cross_entropy(logits, targets, jnp.zeros_like(weights))
    assert float(loss) == 0.0 and float(n) == 0.0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_sequence_log_probs_match(dtype):
    logits, targets, weights = _inputs()
    logits = logits.astype(dtype)

    class Fixed:  # stands in for a model: returns the given logits
        def __call__(self, tokens, positions=None, segment_ids=None):
            return logits

    rows = {"tokens": targets, "positions": targets, "segment_ids": targets, "targets": targets, "weights": weights}
    ours = objectives.sequence_log_probs(Fixed(), rows)
    ref = losses.sequence_log_probs(logits, targets, weights)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5)
    np.testing.assert_array_equal(ours[1], ref[1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
