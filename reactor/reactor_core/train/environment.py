"""Where training may run (the seed's rule), checked before any weights are read.

- Apple Silicon: inference-only mode; training is off (chat through prime's MLX backend).
- CPU-only machine: presets of 1B+ parameters (7B, 13B) are refused unless `force`; the
  message names the smallest preset and the GCP route.

Machine detection is reactor_core.env's; this module only applies the rule.
"""

from __future__ import annotations

import math
import os

from reactor_core import env as env_lib

LARGE_MODEL_PARAMS = 1_000_000_000


class TrainingUnavailable(RuntimeError):
    """This machine cannot (or should not) run the requested training."""


def accelerated(environment: env_lib.Environment) -> bool:
    return any(a.kind in ("cuda", "tpu") for a in environment.accelerators)


def smallest_preset() -> str:
    from reactor_core.models.config import PRESET_PARAM_COUNTS

    prime = {n: c for n, c in PRESET_PARAM_COUNTS.items() if n.startswith("prime-")}
    return min(prime, key=prime.get)


def check_can_train(
    model_name: str, num_params: int | None, *, force: bool = False, environment: env_lib.Environment | None = None
) -> None:
    """Raises TrainingUnavailable when this machine should not train this model."""
    environment = environment or env_lib.detect()
    if environment.kind == "apple_silicon":
        raise TrainingUnavailable(
            "Apple Silicon detected: reactor runs in inference-only mode here and training is off. "
            "Chat with models through prime (MLX backend); train on a GCP GPU/TPU VM or a Linux machine."
        )
    if num_params is not None and num_params >= LARGE_MODEL_PARAMS and not accelerated(environment) and not force:
        small = smallest_preset()
        raise TrainingUnavailable(
            f"{model_name} has {num_params / 1e9:.1f}B parameters: too large to train on this CPU-only machine "
            f"({environment.kind}, {environment.cpu_count} CPUs, {environment.memory_gb:.0f} GB). Train the smallest "
            f"preset here (--model={small}), or run on a GCP VM with a GPU or TPU (spot instances, checkpoints to "
            "gs://). Pass --force to try anyway."
        )


# GCP stops a spot VM about 30 s after its preemption notice (SIGTERM + metadata flag).
GCP_SPOT_NOTICE_S = 30.0
NOTICE_ENV = "REACTOR_PREEMPTION_NOTICE_S"


def preemption_notice_s(environment: env_lib.Environment | None = None) -> float | None:
    """Seconds between a preemption notice and the stop here: $REACTOR_PREEMPTION_NOTICE_S, 30 on a
    GCP spot VM, None where nothing preempts the machine."""
    if os.environ.get(NOTICE_ENV):
        try:
            return float(os.environ[NOTICE_ENV])
        except ValueError:
            raise ValueError(f"{NOTICE_ENV} must be a number of seconds, got {os.environ[NOTICE_ENV]!r}") from None
    if environment is None:
        if not env_lib.on_gce():  # off GCP: no metadata probe at all
            return None
        environment = env_lib.detect()
    return GCP_SPOT_NOTICE_S if environment.gcp is not None and environment.gcp.spot else None


def notice_advice(step_s: float, config, notice_s: float | None) -> str | None:
    """A warning when the steps in flight plus a save cannot finish inside the notice; else None.

    config is the TrainingConfig (its data, optim and run sections).
    """
    in_flight = config.run.steps_in_flight
    bound = step_s * in_flight
    if notice_s is None or bound < notice_s:
        return None
    rows, accum, seq = config.data.batch_size, config.optim.grad_accum_steps, config.data.seq_len
    # Tokens per step set the step time; accumulation inside one compiled step does not shorten it.
    factor = max(2, math.ceil(bound / (0.5 * notice_s)))
    smaller = max(1, rows // factor)
    return (
        f"a training step takes {step_s:.1f}s, so a preemption notice ({notice_s:.0f}s here) waits up to "
        f"{bound:.0f}s for the {in_flight} step(s) in flight before its checkpoint is written: the save would be "
        f"lost. Train fewer tokens per step (now {rows} rows x {accum} micro-batch(es) x {seq} tokens): e.g. "
        f"--batch_size={smaller}, or a shorter --seq_len{' and --steps_in_flight=1' if in_flight > 1 else ''}. "
        "A larger --grad_accum keeps the update's batch but not the step's time (the micro-batches run "
        "inside one compiled step)."
    )
