"""What a step minimises: SFT cross-entropy or DPO, on a merged NNX model.

An objective is `fn(model, batch, reference) -> (loss, weight, metrics)`: the mean loss
of the micro-batch, its weight (trained tokens for SFT, real pairs for DPO) so that
micro-batches combine exactly, and scalar metrics that are weighted means too.
`reference` is the DPO reference model, or None to use `model` with LoRA switched off.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from reactor_core.lora import lora
from reactor_core.train import losses


def _logits(model, rows):
    return model(rows["tokens"], positions=rows["positions"], segment_ids=rows["segment_ids"])  # (B, T, V)


def token_log_probs(logits, targets):
    """log p(targets), (B, T): the same values as losses.token_log_probs, computed fused.

    logit[target] - logsumexp(logits) picks the target with a compare-and-select inside
    the reduction instead of a gather, so neither direction materialises a second
    (B, T, V) array: the backward pass is one fused softmax-minus-one-hot over the logits
    rather than a scatter into a zero tensor plus an add (~1/4 of the LM head's time on CPU).
    """
    logits = logits.astype(jnp.float32)
    vocab = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    picked = jnp.sum(jnp.where(vocab == targets[..., None].astype(jnp.int32), logits, 0.0), axis=-1)  # (B, T)
    return picked - jax.nn.logsumexp(logits, axis=-1)  # (B, T)


def cross_entropy(logits, targets, weights):
    """losses.cross_entropy's (mean loss, weight) with the fused token log-probs."""
    weights = weights.astype(jnp.float32)
    total = jnp.sum(weights)
    loss = -jnp.sum(token_log_probs(logits, targets) * weights) / jnp.maximum(total, 1e-8)
    return jnp.where(total > 0, loss, 0.0), total


def sft_objective(model, batch, reference=None):
    del reference
    loss, weight = cross_entropy(_logits(model, batch), batch["targets"], batch["weights"])
    return loss, weight, {"loss": loss}


def _pair_rows(batch):
    # One forward over chosen and rejected stacked on the batch axis: (2B, T).
    return jax.tree.map(lambda c, r: jnp.concatenate([c, r], axis=0), batch["chosen"], batch["rejected"])


def sequence_log_probs(model, rows):
    """Summed response log-probs and response lengths, each (N,) (losses.sequence_log_probs, fused)."""
    weights = rows["weights"].astype(jnp.float32)
    lp = token_log_probs(_logits(model, rows), rows["targets"])  # (N, T)
    return jnp.sum(lp * weights, axis=-1), jnp.sum(weights, axis=-1)


def reference_log_probs(model, rows, reference=None):
    """Reference log-probs: a separate model, or `model` with its adapters switched off."""
    if reference is not None:
        logps, _ = sequence_log_probs(reference, rows)
    else:
        with lora.disabled(model):
            logps, _ = sequence_log_probs(model, rows)
    return jax.lax.stop_gradient(logps)


def dpo_objective(model, batch, reference=None, *, beta: float, loss_type: str, label_smoothing: float):
    rows = _pair_rows(batch)
    b = batch["valid"].shape[0]
    logps, lengths = sequence_log_probs(model, rows)  # (2B,)
    ref_logps = reference_log_probs(model, rows, reference)  # (2B,)
    loss, metrics = losses.dpo_loss(
        logps[:b],
        logps[b:],
        ref_logps[:b],
        ref_logps[b:],
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        chosen_lengths=lengths[:b],
        rejected_lengths=lengths[b:],
        example_mask=batch["valid"],
    )
    return loss, jnp.sum(batch["valid"]), {"loss": loss, **metrics}


def make_objective(run_config, dpo_config):
    if run_config.mode == "sft":
        return sft_objective
    return functools.partial(
        dpo_objective, beta=dpo_config.beta, loss_type=dpo_config.loss, label_smoothing=dpo_config.label_smoothing
    )


def batch_tokens(batch) -> int:
    """Non-padding input tokens of a host batch (for tokens/s)."""
    rows = [batch["chosen"], batch["rejected"]] if "chosen" in batch else [batch]
    return int(sum((r["segment_ids"] > 0).sum() for r in rows))
