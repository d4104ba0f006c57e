"""TrainingConfig: frozen dataclasses nested by concern, each default written once.

    config = TrainingConfig(model_name="llama-2-7b", use_lora=True, lora_rank=16, num_epochs=3)
    config.lora.rank  # 16

Sub-configs: model, lora, quant, data (reactor_core.data.DataConfig), optim, run, dpo,
checkpoint, mesh. Every leaf field also has one flat name (FLAT_FIELDS) that the
constructor accepts as a keyword and `//reactor:train` exposes as a flag.
Bad values raise ValueError naming the field and what is allowed, before any compute.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Any

from reactor_core.data.config import DataConfig
from reactor_core.dist.mesh import MeshConfig  # the one mesh config: axis sizes + sharding strategy

DTYPES = ("float32", "bfloat16")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_TARGET_ALIASES = {t.removesuffix("_proj"): t for t in LORA_TARGETS}
QUANT_MODES = ("none", "nf4", "int8")
SCHEDULES = ("cosine", "linear", "constant")
MODES = ("sft", "dpo")
DPO_LOSSES = ("sigmoid", "ipo")


def _fail(section: str, name: str, message: str):
    raise ValueError(f"TrainingConfig.{section}.{name} {message}")


def _check_choice(section: str, name: str, value, allowed):
    if value not in allowed:
        _fail(section, name, f"must be one of {allowed}, got {value!r}")


def _check_min(section: str, name: str, value, minimum, *, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        _fail(section, name, f"must be {'a number' if kind is float else 'an int'}, got {value!r}")
    if value < minimum:
        _fail(section, name, f"must be >= {minimum}, got {value!r}")


def _check_bool(section: str, name: str, value):
    if not isinstance(value, bool):
        _fail(section, name, f"must be True or False, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model and in what numerics.

    name: a preset / catalogue name (`prime-135m-chat`, `llama-2-7b`, `tiny`, ...).
    path: HF directory or .gguf file to read weights from; empty reads the name's weights.
      `random` initialises the preset randomly (tests, benchmarks).
    dtype: compute dtype. LoRA keeps the frozen base in it and adapters in float32;
      full fine-tuning keeps float32 master weights.
    remat: recompute each decoder layer in the backward pass (less memory, more compute).
    """

    name: str = "prime-135m-chat"
    path: str = ""
    dtype: str = "bfloat16"
    remat: bool = False

    def __post_init__(self):
        from reactor_core.models.config import PRESETS

        if not isinstance(self.name, str) or not self.name:
            _fail("model", "name", f"must be a model name, got {self.name!r}")
        if self.name not in PRESETS and not self.path:
            close = difflib.get_close_matches(self.name, PRESETS, n=3)
            hint = f" (did you mean {close}?)" if close else ""
            _fail("model", "name", f"must be one of {sorted(PRESETS)} or come with model.path, got {self.name!r}{hint}")
        _check_choice("model", "dtype", self.dtype, DTYPES)
        _check_bool("model", "remat", self.remat)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters. targets: short (q, k, v, o, gate, up, down) or HF names, or all-linear."""

    enabled: bool = True
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    rslora: bool = False  # scale alpha / sqrt(rank) instead of alpha / rank

    def __post_init__(self):
        _check_bool("lora", "enabled", self.enabled)
        _check_min("lora", "rank", self.rank, 1)
        _check_min("lora", "alpha", self.alpha, 0, kind=float)
        _check_min("lora", "dropout", self.dropout, 0.0, kind=float)
        if self.dropout >= 1:
            _fail("lora", "dropout", f"must be in [0, 1), got {self.dropout}")
        _check_bool("lora", "rslora", self.rslora)
        object.__setattr__(self, "targets", normalize_targets(self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / (self.rank**0.5 if self.rslora else self.rank)


def normalize_targets(targets) -> tuple[str, ...]:
    """'q,v' / ['q_proj', 'v'] / 'all-linear' -> HF module names in model order."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    names = list(targets)
    if names in (["all-linear"], ["all_linear"], ["all"]):
        return LORA_TARGETS
    out = set()
    for t in names:
        full = _TARGET_ALIASES.get(t, t)
        if full not in LORA_TARGETS:
            allowed = tuple(_TARGET_ALIASES) + LORA_TARGETS + ("all-linear",)
            _fail("lora", "targets", f"entries must be among {allowed}, got {t!r}")
        out.add(full)
    if not out:
        _fail("lora", "targets", "must name at least one module (e.g. 'q,v' or 'all-linear')")
    return tuple(t for t in LORA_TARGETS if t in out)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """QLoRA: the frozen base linears held as NF4 (double-quantised scales) or int8."""

    mode: str = "none"
    block_size: int = 64  # NF4 values per absmax scale
    double_quant: bool = True  # quantise the absmax scales too (8 bit, blocks of 256)

    def __post_init__(self):
        _check_choice("quant", "mode", self.mode, QUANT_MODES)
        _check_min("quant", "block_size", self.block_size, 2)
        if self.block_size % 2:
            _fail("quant", "block_size", f"must be even (two NF4 codes per byte), got {self.block_size}")
        _check_bool("quant", "double_quant", self.double_quant)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW, linear warmup then decay, global-norm clipping, gradient accumulation."""

    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 10
    final_lr_ratio: float = 0.1  # the decay ends at learning_rate * final_lr_ratio
    max_grad_norm: float = 1.0  # 0 turns clipping off
    grad_accum_steps: int = 1

    def __post_init__(self):
        _check_min("optim", "learning_rate", self.learning_rate, 0.0, kind=float)
        if self.learning_rate == 0:
            _fail("optim", "learning_rate", "must be > 0, got 0")
        _check_min("optim", "weight_decay", self.weight_decay, 0.0, kind=float)
        for name in ("b1", "b2"):
            value = getattr(self, name)
            _check_min("optim", name, value, 0.0, kind=float)
            if value >= 1:
                _fail("optim", name, f"must be in [0, 1), got {value}")
        _check_min("optim", "eps", self.eps, 0.0, kind=float)
        _check_choice("optim", "schedule", self.schedule, SCHEDULES)
        _check_min("optim", "warmup_steps", self.warmup_steps, 0)
        _check_min("optim", "final_lr_ratio", self.final_lr_ratio, 0.0, kind=float)
        if self.final_lr_ratio > 1:
            _fail("optim", "final_lr_ratio", f"must be in [0, 1], got {self.final_lr_ratio}")
        _check_min("optim", "max_grad_norm", self.max_grad_norm, 0.0, kind=float)
        _check_min("optim", "grad_accum_steps", self.grad_accum_steps, 1)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The loop: objective, length, outputs, and how often hooks run (0 = at the end only)."""

    mode: str = "sft"
    num_epochs: int = 1
    max_steps: int = 0  # > 0 overrides num_epochs
    seed: int = 0
    output_dir: str = "runs/reactor"
    log_every: int = 10
    # Steps dispatched and not yet finished (1 or 2): a preemption notice waits for at most this
    # many steps before its save. 2 also hides the host's batch preparation behind the device,
    # worth it only where a step is short next to the notice (fast accelerators).
    steps_in_flight: int = 1
    eval_every: int = 0
    eval_batches: int = 0  # 0: the whole eval split
    progress: bool = True
    plot: bool = True
    export_merged: bool = False  # also write the adapter merged into a full HF model
    force: bool = False  # train a 7B/13B preset on a CPU-only machine anyway

    def __post_init__(self):
        _check_choice("run", "mode", self.mode, MODES)
        _check_min("run", "num_epochs", self.num_epochs, 1)
        for name in ("max_steps", "seed", "log_every", "eval_every", "eval_batches"):
            _check_min("run", name, getattr(self, name), 0)
        if isinstance(self.steps_in_flight, bool) or self.steps_in_flight not in (1, 2):
            _fail("run", "steps_in_flight", f"must be 1 or 2, got {self.steps_in_flight!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            _fail("run", "output_dir", f"must be a directory path, got {self.output_dir!r}")
        for name in ("progress", "plot", "export_merged", "force"):
            _check_bool("run", name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """Direct preference optimisation (run.mode='dpo'), as TRL defines it.

    reference: empty uses the policy itself with LoRA switched off (no second copy of the
      base); otherwise a HF directory / .gguf / catalogue name of the reference model.
    """

    beta: float = 0.1
    loss: str = "sigmoid"
    label_smoothing: float = 0.0  # > 0: conservative DPO (sigmoid only)
    reference: str = ""

    def __post_init__(self):
        _check_min("dpo", "beta", self.beta, 0.0, kind=float)
        if self.beta == 0:
            _fail("dpo", "beta", "must be > 0, got 0")
        _check_choice("dpo", "loss", self.loss, DPO_LOSSES)
        _check_min("dpo", "label_smoothing", self.label_smoothing, 0.0, kind=float)
        if self.label_smoothing >= 0.5:
            _fail("dpo", "label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        if self.loss == "ipo" and self.label_smoothing:
            _fail("dpo", "label_smoothing", "must be 0 with loss='ipo' (it applies to 'sigmoid' only)")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints every N steps and at the end (0 = none); dir empty = <output_dir>/checkpoints.

    resume: a run whose dir holds a complete checkpoint continues from it (off: such a dir
    is refused rather than overwritten). dir may be gs://BUCKET/PATH.
    """

    dir: str = ""
    every_n_steps: int = 0
    keep: int = 3
    resume: bool = True

    def __post_init__(self):
        _check_min("checkpoint", "every_n_steps", self.every_n_steps, 0)
        _check_min("checkpoint", "keep", self.keep, 1)
        _check_bool("checkpoint", "resume", self.resume)


SECTIONS = {
    "model": ModelConfig,
    "lora": LoraConfig,
    "quant": QuantConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "dpo": DPOConfig,
    "checkpoint": CheckpointConfig,
    "mesh": MeshConfig,
}

# Flat name -> (section, field). The constructor takes these as keywords; the CLI as flags.
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    "model_name": ("model", "name"),
    "model_path": ("model", "path"),
    "dtype": ("model", "dtype"),
    "remat": ("model", "remat"),
    "use_lora": ("lora", "enabled"),
    "lora_rank": ("lora", "rank"),
    "lora_alpha": ("lora", "alpha"),
    "lora_dropout": ("lora", "dropout"),
    "lora_targets": ("lora", "targets"),
    "rslora": ("lora", "rslora"),
    "quantize": ("quant", "mode"),
    "quant_block_size": ("quant", "block_size"),
    "double_quant": ("quant", "double_quant"),
    "data_path": ("data", "path"),
    "eval_data": ("data", "eval_path"),
    "eval_fraction": ("data", "eval_fraction"),
    "seq_len": ("data", "seq_len"),
    "batch_size": ("data", "batch_size"),
    "pack": ("data", "pack"),
    "pack_window": ("data", "pack_window"),
    "data_seed": ("data", "seed"),
    "shuffle": ("data", "shuffle"),
    "loss_on": ("data", "loss_on"),
    "overlong": ("data", "overlong"),
    "skip_bad_lines": ("data", "skip_bad_lines"),
    "lr": ("optim", "learning_rate"),
    "weight_decay": ("optim", "weight_decay"),
    "adam_b1": ("optim", "b1"),
    "adam_b2": ("optim", "b2"),
    "adam_eps": ("optim", "eps"),
    "schedule": ("optim", "schedule"),
    "warmup_steps": ("optim", "warmup_steps"),
    "final_lr_ratio": ("optim", "final_lr_ratio"),
    "max_grad_norm": ("optim", "max_grad_norm"),
    "grad_accum": ("optim", "grad_accum_steps"),
    "mode": ("run", "mode"),
    "num_epochs": ("run", "num_epochs"),
    "steps": ("run", "max_steps"),
    "seed": ("run", "seed"),
    "output_dir": ("run", "output_dir"),
    "log_every": ("run", "log_every"),
    "steps_in_flight": ("run", "steps_in_flight"),
    "eval_every": ("run", "eval_every"),
    "eval_batches": ("run", "eval_batches"),
    "progress": ("run", "progress"),
    "plot": ("run", "plot"),
    "export_merged": ("run", "export_merged"),
    "force": ("run", "force"),
    "dpo_beta": ("dpo", "beta"),
    "dpo_loss": ("dpo", "loss"),
    "dpo_label_smoothing": ("dpo", "label_smoothing"),
    "dpo_reference": ("dpo", "reference"),
    "checkpoint_dir": ("checkpoint", "dir"),
    "checkpoint_every": ("checkpoint", "every_n_steps"),
    "checkpoint_keep": ("checkpoint", "keep"),
    "checkpoint_resume": ("checkpoint", "resume"),
    "mesh_data": ("mesh", "data"),
    "mesh_fsdp": ("mesh", "fsdp"),
    "mesh_tensor": ("mesh", "tensor"),
    "mesh_strategy": ("mesh", "strategy"),
}
# A string given for these sections sets this field.
SHORTHAND = {"model": "name", "quant": "mode"}
ALIASES = {"learning_rate": "lr", "max_steps": "steps", "lora_r": "lora_rank"}


@dataclasses.dataclass(frozen=True, init=False)
class TrainingConfig:
    """The whole training run. Accepts sub-configs and/or flat keywords (FLAT_FIELDS)."""

    model: ModelConfig
    lora: LoraConfig
    quant: QuantConfig
    data: DataConfig
    optim: OptimConfig
    run: RunConfig
    dpo: DPOConfig
    checkpoint: CheckpointConfig
    mesh: MeshConfig

    def __init__(self, **kwargs: Any):
        sections = {}
        for name, cls in SECTIONS.items():
            value = kwargs.pop(name, None)
            if value is None:
                value = cls()
            elif isinstance(value, str) and name == "mesh":
                value = _parse_mesh(value, kwargs.get("mesh_strategy"))  # mesh="data:2,fsdp:-1,tensor:1"
            elif isinstance(value, str) and name in SHORTHAND:
                value = cls(**{SHORTHAND[name]: value})  # model="llama-2-7b", quant="nf4"
            elif isinstance(value, dict):
                value = section_from_dict(name, value)
            elif not isinstance(value, cls):
                raise ValueError(f"TrainingConfig.{name} must be a {cls.__name__}, got {type(value).__name__}")
            sections[name] = value
        overrides: dict[str, dict[str, Any]] = {}
        for key, value in kwargs.items():
            section, field = _flat_field(key)
            overrides.setdefault(section, {})[field] = value
        for section, changes in overrides.items():
            sections[section] = dataclasses.replace(sections[section], **changes)
        for name, value in sections.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self):
        if self.quant.mode != "none" and not self.lora.enabled:
            raise ValueError(
                f"TrainingConfig.quant.mode={self.quant.mode!r} needs lora.enabled=True: "
                "a quantised base can only be trained through adapters (QLoRA). "
                "Allowed: quant.mode='none', or use_lora=True."
            )

    def replace(self, **kwargs: Any) -> TrainingConfig:
        """A copy with sub-configs and/or flat fields changed."""
        current = {name: getattr(self, name) for name in SECTIONS}
        for key in list(kwargs):
            if key in SECTIONS:
                current[key] = kwargs.pop(key)
        return TrainingConfig(**current, **kwargs)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ValueError(f"TrainingConfig has no section(s) {sorted(unknown)}; sections: {list(SECTIONS)}")
        return cls(**{name: section_from_dict(name, value) for name, value in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def load(cls, path: str) -> TrainingConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def flat(self) -> dict[str, Any]:
        """Flat name -> value, for every leaf field."""
        return {key: getattr(getattr(self, s), f) for key, (s, f) in FLAT_FIELDS.items()}


def _parse_mesh(spec: str, strategy: str | None) -> MeshConfig:
    """mesh="data:2,fsdp:-1,tensor:1" (the --mesh flag's syntax); strategy from mesh_strategy."""
    try:
        return MeshConfig.parse(spec, strategy=MeshConfig.strategy if strategy is None else strategy)
    except ValueError as e:
        raise ValueError(f"TrainingConfig.mesh={spec!r}: {e}") from None


def section_from_dict(name: str, value: dict[str, Any]):
    cls = SECTIONS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - fields
    if unknown:
        raise ValueError(f"TrainingConfig.{name} has no field(s) {sorted(unknown)}; fields: {sorted(fields)}")
    value = dict(value)
    if name == "lora" and "targets" in value:
        value["targets"] = tuple(value["targets"]) if isinstance(value["targets"], list) else value["targets"]
    return cls(**value)


def _flat_field(key: str) -> tuple[str, str]:
    key = ALIASES.get(key, key)
    if key in FLAT_FIELDS:
        return FLAT_FIELDS[key]
    close = difflib.get_close_matches(key, list(FLAT_FIELDS) + list(SECTIONS), n=3)
    hint = f"; did you mean {close}?" if close else ""
    raise ValueError(
        f"TrainingConfig has no field {key!r}{hint} Fields: sections {list(SECTIONS)} or {sorted(FLAT_FIELDS)}"
    )


def default_of(flat_name: str):
    """The dataclass default of a flat field (the one place defaults live)."""
    section, field = FLAT_FIELDS[ALIASES.get(flat_name, flat_name)]
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == field:
            return f.default
    raise KeyError(flat_name)
