"""Fine-tune a reactor model (SFT or DPO; LoRA, QLoRA or full).

    bazel run //reactor:train -- --model=prime-135m-chat --data=data/train.jsonl --output=runs/chat
    bazel run //reactor:train -- --model=prime-7b-chat --data=PATH.jsonl --output=DIR --quant=nf4 --steps=1000
    bazel run //reactor:train -- --mode=dpo --data=data/preference_train.jsonl --eval_data=... --dpo_beta=0.1
    bazel run //reactor:train -- --config=runs/chat/config.json --lr=1e-4    # a saved config, changed
    bazel run //reactor:train -- --mesh=data:2,fsdp:2,tensor:2 --mesh_strategy=fsdp_tp ...  # 8 devices

Devices: the run is sharded over every device on a mesh (--mesh, default data:1,fsdp:-1,tensor:1,
strategy fsdp; see reactor_core/dist/sharding.py). Several hosts: the same command on each, with
--coordinator_address=HOST0:8476 --num_processes=N --process_id=I (or REACTOR_* variables; see
reactor_core/dist/multihost.py); all hosts train, process 0 alone writes the run directory.

Every TrainingConfig field is a flag named by its flat name (reactor_core.train.config.
FLAT_FIELDS), with --model, --data, --output and --quant as short forms. A flag left
unset keeps the dataclass default (or the --config file's value), except the fields
the machine's profile (reactor_core.env) defaults: on a GCP spot VM, checkpoints every 50
steps and automatic resume; on a plain CPU box, --batch_size=2 --seq_len=512 (a step of
seconds, not a minute). The run prints which values came from the profile, and after its
first measured step the time per step and the expected duration of the whole run. Relative
paths are taken from the directory `bazel run` was started in.

Resume and preemption: with checkpoints on (--checkpoint_every, --checkpoint_dir local or
gs://), running the same command again continues from the newest complete checkpoint. On
SIGTERM or a metadata-server preemption notice the run saves after the current step and
exits with EXIT_PREEMPTED (143); a config that differs from the checkpoint's in fields that
matter is refused, naming them. --tokenizer=DIR uses that tokenizer (e.g. with
--model_path=random, whose random weights come without one).
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
flags.DEFINE_string(
    "tokenizer", None, "A tokenizer directory (Hugging Face files) instead of the model's own; random weights need one."
)

flags.DEFINE_string(
    "mesh",
    None,
    "Device mesh axis sizes, e.g. data:1,fsdp:-1,tensor:1 (-1: the devices the others leave); the "
    "strategy is --mesh_strategy. Sets TrainingConfig.mesh; --mesh_data/--mesh_fsdp/--mesh_tensor override it.",
)
# Multi-host (reactor_core.dist.multihost): unset flags fall back to REACTOR_* / JAX_* variables.
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (env REACTOR_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Processes (hosts) in the job (env REACTOR_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1 (env REACTOR_PROCESS_ID).")

# Flat fields the environment profile defaults when the user did not set them -> Profile field.
PROFILE_FIELDS = {"checkpoint_every": "checkpoint_every_steps", "checkpoint_resume": "auto_resume"}
# On a plain CPU box the dataclass's 8 x 1,024 tokens cost about a minute a step (135M model, 2
# cores); the cpu profile's micro-batch x sequence length cost seconds. Other profiles keep the sizes.
CPU_SIZE_FIELDS = {"batch_size": "micro_batch_size", "seq_len": "max_seq_len"}


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
    if flag_values.mesh is not None:
        strategy = overrides.get("mesh_strategy", base.mesh.strategy)
        try:
            overrides["mesh"] = config_lib.MeshConfig.parse(flag_values.mesh, strategy=strategy)
        except ValueError as e:
            raise ValueError(f"--mesh={flag_values.mesh}: {e}") from None
    config = base.replace(**overrides)
    flat = config.flat()
    paths = {}
    for name in PATH_FIELDS:
        if flat[name] and flat[name] != "random":
            paths[name] = resolve_path(flat[name], must_exist=name in ("model_path", "dpo_reference"))
    return config.replace(**paths)


def distributed_from_flags(flag_values=FLAGS):
    """multihost.DistributedConfig from --coordinator_address/--num_processes/--process_id, else env."""
    from reactor_core.dist import multihost

    try:
        return multihost.DistributedConfig.from_env(
            coordinator_address=flag_values.coordinator_address,
            num_processes=flag_values.num_processes,
            process_id=flag_values.process_id,
        )
    except ValueError as e:
        raise ValueError(
            f"multi-host settings (--coordinator_address, --num_processes, --process_id or REACTOR_* / JAX_* "
            f"variables): {e}"
        ) from None


def user_set_fields(flag_values=FLAGS) -> set[str]:
    """Flat fields the user chose: a flag given, or a --config value other than the default."""
    chosen = {flat for flag, flat in flag_to_field().items() if flag_values[flag].value is not None}
    if flag_values.config:
        saved = config_lib.TrainingConfig.load(resolve_path(flag_values.config)).flat()
        chosen |= {flat for flat, value in saved.items() if value != config_lib.default_of(flat)}
    return chosen


def apply_profile(config: config_lib.TrainingConfig, chosen: set[str], prof) -> tuple[config_lib.TrainingConfig, dict]:
    """(config with the profile's defaults for PROFILE_FIELDS the user left unset, {flat: value} applied)."""
    fields = {**PROFILE_FIELDS, **(CPU_SIZE_FIELDS if prof.name == "cpu" else {})}
    applied = {flat: getattr(prof, attr) for flat, attr in fields.items() if flat not in chosen}
    return (config.replace(**applied) if applied else config), applied


def _flag_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from reactor_core import env as env_lib

    try:
        config = config_from_flags()
        prof = env_lib.profile(env_lib.detect())
        config, applied = apply_profile(config, user_set_fields(), prof)
        distributed = distributed_from_flags()
    except ValueError as e:
        sys.exit(f"error: {e}")
    from reactor_core.dist import multihost

    multihost.initialize(distributed)  # joins the other hosts; must precede any JAX computation
    if applied:
        chosen = " ".join(f"--{flat}={_flag_text(value)}" for flat, value in applied.items())
        print(f"defaults from the {prof.name} profile (flags left unset): {chosen}", flush=True)
    from reactor_core.ckpt.checkpoint import ConfigMismatchError
    from reactor_core.dist.preemption import EXIT_PREEMPTED
    from reactor_core.train.checkpoint_hook import ResumeRefused
    from reactor_core.train.environment import TrainingUnavailable
    from reactor_core.train.hooks import Preempted
    from reactor_core.train.trainer import Trainer

    kwargs = {}
    if FLAGS.tokenizer:
        from transformers import AutoTokenizer

        kwargs["tokenizer"] = AutoTokenizer.from_pretrained(resolve_path(FLAGS.tokenizer))
    try:
        result = Trainer(config, **kwargs).train()
    except (TrainingUnavailable, ConfigMismatchError, ResumeRefused) as e:
        sys.exit(f"error: {e}")
    except Preempted as e:
        print(f"reactor: {e}", flush=True)  # the one line a supervisor's log needs
        sys.exit(EXIT_PREEMPTED)
    print(f"trained {result.steps} steps; run directory {result.output_dir}")
    for key in sorted(result.metrics):
        print(f"  {key} = {result.metrics[key]:.6g}")
    for name, path in sorted(result.outputs.items()):
        print(f"  {name}: {path}")


if __name__ == "__main__":
    app.run(main)
