"""Fine-tune a reactor model (SFT or DPO; LoRA, QLoRA or full).

    bazel run //reactor:train -- --model=prime-135m-chat --data=data/train.jsonl --output=runs/chat
    bazel run //reactor:train -- --model=prime-7b-chat --data=PATH.jsonl --output=DIR --quant=nf4 --steps=1000
    bazel run //reactor:train -- --mode=dpo --data=data/preference_train.jsonl --eval_data=... --dpo_beta=0.1
    bazel run //reactor:train -- --config=runs/chat/config.json --lr=1e-4    # a saved config, changed

Every TrainingConfig field is a flag named by its flat name (reactor_core.train.config.
FLAT_FIELDS), with --model, --data, --output and --quant as short forms. A flag left
unset keeps the dataclass default (or the --config file's value). Relative paths are
taken from the directory `bazel run` was started in.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from reactor_core.train import config as config_lib

# Short flag names for the most used fields.
SHORT_FLAGS = {"model": "model_name", "data": "data_path", "output": "output_dir", "quant": "quantize"}
# Fields holding local paths; catalogue names and gs:// URLs are left alone.
PATH_FIELDS = ("data_path", "eval_data", "output_dir", "checkpoint_dir", "model_path", "dpo_reference")

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A TrainingConfig JSON (e.g. a run's config.json); flags override it.")


def flag_to_field() -> dict[str, str]:
    """Flag name -> flat config name, for every flag this tool defines."""
    out = {flat: flat for flat in config_lib.FLAT_FIELDS if flat not in SHORT_FLAGS.values()}
    out.update(SHORT_FLAGS)
    return out


def _define_flags() -> None:
    for flag, flat in flag_to_field().items():
        section, name = config_lib.FLAT_FIELDS[flat]
        default = config_lib.default_of(flat)
        help_text = f"TrainingConfig.{section}.{name} (default {default!r})."
        if isinstance(default, bool):
            flags.DEFINE_bool(flag, None, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(flag, None, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(flag, None, help_text)
        elif isinstance(default, tuple):
            flags.DEFINE_list(flag, None, help_text)
        else:
            flags.DEFINE_string(flag, None, help_text)


_define_flags()


def resolve_path(path: str, *, must_exist: bool = False) -> str:
    """A relative path under `bazel run` is relative to BUILD_WORKING_DIRECTORY."""
    base = os.environ.get("BUILD_WORKING_DIRECTORY")
    if not path or not base or os.path.isabs(path) or "://" in path:
        return path
    joined = os.path.normpath(os.path.join(base, path))
    if must_exist and not os.path.exists(joined):
        return path  # a catalogue name such as prime-135m-chat, not a file
    return joined


def config_from_flags(flag_values=FLAGS) -> config_lib.TrainingConfig:
    """The config of --config (if any) with every set flag applied and local paths resolved."""
    base = (
        config_lib.TrainingConfig.load(resolve_path(flag_values.config))
        if flag_values.config
        else config_lib.TrainingConfig()
    )
    overrides = {}
    for flag, flat in flag_to_field().items():
        value = flag_values[flag].value
        if value is not None:
            overrides[flat] = tuple(value) if isinstance(value, list) else value
    config = base.replace(**overrides)
    flat = config.flat()
    paths = {}
    for name in PATH_FIELDS:
        if flat[name] and flat[name] != "random":
            paths[name] = resolve_path(flat[name], must_exist=name in ("model_path", "dpo_reference"))
    return config.replace(**paths)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_flags()
    except ValueError as e:
        sys.exit(f"error: {e}")
    from reactor_core.train.environment import TrainingUnavailable
    from reactor_core.train.trainer import Trainer

    try:
        result = Trainer(config).train()
    except TrainingUnavailable as e:
        sys.exit(f"error: {e}")
    print(f"trained {result.steps} steps; run directory {result.output_dir}")
    for key in sorted(result.metrics):
        print(f"  {key} = {result.metrics[key]:.6g}")
    for name, path in sorted(result.outputs.items()):
        print(f"  {name}: {path}")


if __name__ == "__main__":
    app.run(main)
