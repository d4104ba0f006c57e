"""Where training may run (the seed's rule), checked before any weights are read.

- Apple Silicon: inference-only mode; training is off (chat through prime's MLX backend).
- CPU-only machine: presets of 1B+ parameters (7B, 13B) are refused unless `force`; the
  message names the smallest preset and the GCP route.

Machine detection is reactor_core.env's; this module only applies the rule.
"""

from __future__ import annotations

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
