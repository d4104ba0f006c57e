"""The optimizer: AdamW after global-norm clipping, with linear warmup then cosine/linear decay."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to learning_rate, then decay to learning_rate * final_lr_ratio at total_steps."""
    peak = optim_config.learning_rate
    end = peak * optim_config.final_lr_ratio
    total_steps = max(int(total_steps), 1)
    warmup = min(optim_config.warmup_steps, total_steps - 1)
    decay_steps = total_steps - warmup
    if optim_config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=optim_config.final_lr_ratio)
    elif optim_config.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decay_mask(params):
    # Decay matrices only: norms and other vectors keep their scale.
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def build_optimizer(optim_config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optax transformation, learning-rate schedule). Gradients reach it already averaged."""
    schedule = learning_rate_schedule(optim_config, total_steps)
    parts = []
    if optim_config.max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(optim_config.max_grad_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=optim_config.b1,
            b2=optim_config.b2,
            eps=optim_config.eps,
            weight_decay=optim_config.weight_decay,
            mask=_decay_mask,
        )
    )
    return optax.chain(*parts), schedule
