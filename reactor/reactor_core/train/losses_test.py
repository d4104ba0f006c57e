"""Tests for the losses against plain-math references and torch's cross-entropy."""

import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.train import losses

# Fixed summed log-probs of four pairs: policy chosen/rejected, reference chosen/rejected.
PC = [-10.0, -20.0, -5.0, -7.5]
PR = [-12.0, -18.0, -9.0, -7.5]
RC = [-11.0, -19.0, -6.0, -8.0]
RR = [-11.5, -19.5, -8.0, -7.0]
CHOSEN_LEN = [4, 10, 2, 5]
REJECTED_LEN = [6, 8, 3, 5]


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def reference_dpo(beta, kind, eps=0.0):
    """Per-pair loss, chosen reward, rejected reward, written out with math."""
    rows = []
    for pc, pr, rc, rr, cl, rl in zip(PC, PR, RC, RR, CHOSEN_LEN, REJECTED_LEN):
        if kind == "ipo":
            pc, rc, pr, rr = pc / cl, rc / cl, pr / rl, rr / rl
        h = (pc - pr) - (rc - rr)
        if kind == "ipo":
            loss = (h - 1 / (2 * beta)) ** 2
        else:
            loss = -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
        rows.append((loss, beta * (pc - rc), beta * (pr - rr)))
    return rows


def check_metrics(loss, metrics, rows, mask=(1, 1, 1, 1)):
    n = sum(mask)
    mean = lambda xs: sum(x * m for x, m in zip(xs, mask)) / n  # noqa: E731
    np.testing.assert_allclose(float(loss), mean([r[0] for r in rows]), rtol=1e-6)
    np.testing.assert_allclose(
        float(metrics["rewards/chosen"]), mean([r[1] for r in rows]), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        float(metrics["rewards/rejected"]), mean([r[2] for r in rows]), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        float(metrics["rewards/margins"]), mean([r[1] - r[2] for r in rows]), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        float(metrics["rewards/accuracies"]), mean([float(r[1] > r[2]) for r in rows])
    )


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_dpo(beta):
    loss, metrics = losses.dpo_loss(
        jnp.array(PC), jnp.array(PR), jnp.array(RC), jnp.array(RR), beta=beta
    )
    check_metrics(loss, metrics, reference_dpo(beta, "sigmoid"))


def test_sigmoid_at_equal_policy_and_reference_is_log_2():
    loss, metrics = losses.dpo_loss(
        jnp.array(PC), jnp.array(PR), jnp.array(PC), jnp.array(PR), beta=0.3
    )
    np.testing.assert_allclose(float(loss), math.log(2), rtol=1e-6)
    assert float(metrics["rewards/accuracies"]) == 0.0


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_conservative_dpo_label_smoothing(eps):
    loss, metrics = losses.dpo_loss(PC, PR, RC, RR, beta=0.2, label_smoothing=eps)
    check_metrics(loss, metrics, reference_dpo(0.2, "sigmoid", eps))


def test_ipo_averages_over_response_length():
    loss, metrics = losses.dpo_loss(
        PC,
        PR,
        RC,
        RR,
        beta=0.1,
        loss_type="ipo",
        chosen_lengths=CHOSEN_LEN,
        rejected_lengths=REJECTED_LEN,
    )
    check_metrics(loss, metrics, reference_dpo(0.1, "ipo"))


def test_example_mask_ignores_padding_pairs():
    mask = (1, 0, 1, 1)
    loss, metrics = losses.dpo_loss(
        PC, PR, RC, RR, beta=0.1, example_mask=jnp.array(mask, jnp.float32)
    )
    check_metrics(loss, metrics, reference_dpo(0.1, "sigmoid"), mask)


def test_dpo_argument_errors():
    with pytest.raises(ValueError, match="loss_type"):
        losses.dpo_loss(PC, PR, RC, RR, loss_type="hinge")
    with pytest.raises(ValueError, match="chosen_lengths"):
        losses.dpo_loss(PC, PR, RC, RR, loss_type="ipo")
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.dpo_loss(PC, PR, RC, RR, label_smoothing=0.6)
    with pytest.raises(ValueError, match="beta"):
        losses.dpo_loss(PC, PR, RC, RR, beta=0.0)


def random_batch(seed=0, b=3, t=7, v=13):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, t, v)).astype(np.float32) * 3
    targets = rng.integers(0, v, (b, t)).astype(np.int32)
    weights = (rng.random((b, t)) < 0.6).astype(np.float32)
    return logits, targets, weights


def test_cross_entropy_matches_torch():
    import torch
    import torch.nn.functional as F

    logits, targets, weights = random_batch()
    loss, count = losses.cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)
    )
    per_token = F.cross_entropy(
        torch.from_numpy(logits).reshape(-1, 13),
        torch.from_numpy(targets).long().reshape(-1),
        reduction="none",
    ).numpy()
    expected = (per_token * weights.reshape(-1)).sum() / weights.sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(count) == weights.sum()
    # Same as torch's ignore_index convention for 0/1 weights.
    ignored = np.where(weights > 0, targets, -100)
    ref = F.cross_entropy(
        torch.from_numpy(logits).reshape(-1, 13),
        torch.from_numpy(ignored).long().reshape(-1),
        ignore_index=-100,
    )
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)


def test_cross_entropy_bfloat16_logits_and_zero_weights():
    logits, targets, weights = random_batch(1)
    loss32, _ = losses.cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)
    )
    loss16, _ = losses.cross_entropy(
        jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets), jnp.asarray(weights)
    )
    np.testing.assert_allclose(float(loss16), float(loss32), rtol=2e-2)
    zero, count = losses.cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.zeros_like(weights)
    )
    assert float(zero) == 0.0 and float(count) == 0.0


def test_sequence_log_probs_by_hand():
    logits, targets, weights = random_batch(2)
    logps, counts = losses.sequence_log_probs(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)
    )
    for b in range(3):
        total = 0.0
        for t in range(7):
            row = logits[b, t].astype(np.float64)
            total += weights[b, t] * (row[targets[b, t]] - math.log(np.exp(row).sum()))
        np.testing.assert_allclose(float(logps[b]), total, rtol=1e-5)
        assert float(counts[b]) == weights[b].sum()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
