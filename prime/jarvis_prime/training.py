"""jarvis-prime[training]: fine-tune a PRIME model with Reactor, then load it back with Prime.

    from jarvis_prime.training import fine_tune
    run = fine_tune("prime-135m-chat-v1", "data/train.jsonl", output_dir="runs/mine", steps=200)
    model = PrimeModel.from_pretrained("prime-135m-chat-v1", adapter=run.adapter)

This module is the one place Prime reaches Reactor's trainer (Bazel target
`//prime:training`); `PrimeModel` and the Jarvis runtime never depend on it, so an
inference-only install (an Apple Silicon laptop) carries no optax/orbax. The weights are
found the way `PrimeModel.from_pretrained` finds them (directory, store, package, gs://,
Hub), but never through the offline fallback: training a substitute model silently would
hand back an adapter for the wrong base.
"""

from __future__ import annotations

import dataclasses
import os

from jarvis_prime import sources
from jarvis_prime.errors import ModelNotAvailableError, PrimeError
from jarvis_prime.store import Store


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
    model: str  # the catalogue name (or directory) that was fine-tuned
    base_path: str  # the model directory training read
    adapter: str | None  # PEFT directory: PrimeModel.from_pretrained(model, adapter=...)
    output_dir: str
    metrics: dict[str, float]
    initial_metrics: dict[str, float]
    steps: int
    outputs: dict[str, str]


def training_config(name_or_path: str, data: str | os.PathLike, *, store: Store | None = None, **options):
    """(reactor TrainingConfig, resolved source) for fine-tuning `name_or_path` on `data`.

    options: any TrainingConfig flat field (lora_rank, steps, lr, batch_size, seq_len,
    output_dir, mode="dpo", quantize="nf4", ...). model_name / model_path come from the
    catalogue entry and may not be given.
    """
    from reactor_core import TrainingConfig

    for key in ("model_name", "model_path", "model"):
        if key in options:
            raise PrimeError(
                f"fine_tune: {key}= is set from the PRIME model {name_or_path!r}; pass the model as the first argument"
            )
    resolved = sources.resolve(name_or_path, store=store, fallback=False)
    # A directory outside the catalogue has no preset: the trainer reads its config.json.
    name = resolved.info.name if resolved.info.preset == "custom" else resolved.info.preset
    try:
        config = TrainingConfig(model_name=name, model_path=resolved.path, data_path=os.fspath(data), **options)
    except ValueError as err:
        raise PrimeError(f"fine_tune({name_or_path!r}): {err}") from None
    return config, resolved


def fine_tune(name_or_path: str, data: str | os.PathLike, *, store: Store | None = None, **options) -> FineTuneResult:
    """Fine-tunes a PRIME model (LoRA by default) on a JSONL file with Reactor's Trainer.

    Returns where the adapter went; load it with `PrimeModel.from_pretrained(name, adapter=...)`.
    """
    from reactor_core import Trainer

    if not os.path.isfile(os.fspath(data)):
        raise ModelNotAvailableError(f"fine_tune: training data {os.fspath(data)!r} is not a file (JSONL expected)")
    config, resolved = training_config(name_or_path, data, store=store, **options)
    result = Trainer(config).train()
    return FineTuneResult(
        model=resolved.info.name,
        base_path=resolved.path,
        adapter=result.outputs.get("adapter"),
        output_dir=result.output_dir,
        metrics=result.metrics,
        initial_metrics=result.initial_metrics,
        steps=result.steps,
        outputs=result.outputs,
    )
