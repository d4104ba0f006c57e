"""Losses: masked token cross-entropy and DPO (sigmoid / conservative / IPO), pure jax.numpy.

Targets and weights come from reactor_core.data.packing: logits[:, t] predicts
targets[:, t] with weight weights[:, t] (0 across segment boundaries and in padding).

DPO follows TRL's DPOTrainer definitions. With summed sequence log-probs
  h = (pi_chosen - pi_rejected) - (ref_chosen - ref_rejected)
  sigmoid:  -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)
            (eps = label_smoothing; eps > 0 is conservative DPO, cDPO)
  ipo:      (h - 1 / (2 * beta))^2, with log-probs averaged over response tokens
  rewards:  beta * (pi - ref) for chosen and rejected, from the same log-probs.
"""

import jax
import jax.numpy as jnp

DPO_LOSS_TYPES = ("sigmoid", "ipo")


def token_log_probs(logits, targets):
    """log p(targets) per position. logits (..., V), targets (...) -> (...) float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def cross_entropy(logits, targets, weights):
    """Mean cross-entropy over weighted target tokens.

    Args:
      logits: (B, T, V) any float dtype (computed in float32).
      targets: (B, T) int token ids.
      weights: (B, T) float, 0 where nothing is trained.

    Returns:
      (loss, num_tokens): scalar mean over weight (0 when the weights sum to 0) and the
      summed weight, so callers can combine micro-batches exactly.
    """
    weights = weights.astype(jnp.float32)
    nll = -token_log_probs(logits, targets)  # (B, T)
    total = jnp.sum(weights)
    loss = jnp.sum(nll * weights) / jnp.maximum(total, 1e-8)
    return jnp.where(total > 0, loss, 0.0), total


def sequence_log_probs(logits, targets, weights):
    """Summed log-prob of each sequence's weighted targets.

    Args:
      logits: (B, T, V); targets, weights: (B, T).

    Returns:
      (log_probs, num_tokens), each (B,) float32. log_probs / num_tokens is the
      length-averaged log-prob IPO uses.
    """
    weights = weights.astype(jnp.float32)
    lp = token_log_probs(logits, targets)  # (B, T)
    return jnp.sum(lp * weights, axis=-1), jnp.sum(weights, axis=-1)


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    *,
    beta=0.1,
    loss_type="sigmoid",
    label_smoothing=0.0,
    chosen_lengths=None,
    rejected_lengths=None,
    example_mask=None,
):
    """DPO loss and metrics over a batch of pairs.

    Args:
      *_logps: (B,) summed response log-probs (sequence_log_probs).
      beta: the KL strength.
      loss_type: "sigmoid" (DPO; cDPO with label_smoothing > 0) or "ipo".
      label_smoothing: eps in [0, 0.5), sigmoid only.
      chosen_lengths, rejected_lengths: (B,) response token counts; required for "ipo",
        which averages log-probs over them (as TRL does).
      example_mask: optional (B,) weights; 0 marks padding pairs (batch["valid"]).

    Returns:
      (loss, metrics): scalar mean loss and a dict of scalars: rewards/chosen,
      rewards/rejected, rewards/margins, rewards/accuracies (chosen reward > rejected).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if loss_type == "ipo" and label_smoothing:
        raise ValueError("label_smoothing applies to loss_type='sigmoid' only")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    pc, pr, rc, rr = (
        jnp.asarray(x, jnp.float32)
        for x in (
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps,
            reference_rejected_logps,
        )
    )
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError(
                "loss_type='ipo' needs chosen_lengths and rejected_lengths (it averages log-probs)"
            )
        cl = jnp.maximum(jnp.asarray(chosen_lengths, jnp.float32), 1.0)
        rl = jnp.maximum(jnp.asarray(rejected_lengths, jnp.float32), 1.0)
        pc, rc, pr, rr = pc / cl, rc / cl, pr / rl, rr / rl
    h = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(
            beta * h
        ) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    else:
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    chosen_rewards = beta * (pc - rc)
    rejected_rewards = beta * (pr - rr)
    mask = jnp.ones_like(h) if example_mask is None else jnp.asarray(example_mask, jnp.float32)

    def mean(x):
        return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1e-8)

    metrics = {
        "rewards/chosen": mean(chosen_rewards),
        "rewards/rejected": mean(rejected_rewards),
        "rewards/margins": mean(chosen_rewards - rejected_rewards),
        "rewards/accuracies": mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
    }
    return mean(losses), metrics
