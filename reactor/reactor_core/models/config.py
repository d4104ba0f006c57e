"""Llama-family model configs: one frozen dataclass, a preset registry, and shape math.

`LlamaConfig.preset("prime-7b-chat")` returns a config; `param_count(config)` counts
parameters through `jax.eval_shape`, so even 13B presets never allocate weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. `default` leaves frequencies as they are."""

    rope_type: str = "default"
    factor: float = 1.0
    # llama3 only: the band of wavelengths that is interpolated smoothly.
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_scaling.rope_type must be one of {ROPE_TYPES}, got {self.rope_type!r}")
        if self.factor <= 0:
            raise ValueError(f"rope_scaling.factor must be > 0, got {self.factor}")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shapes and numerics of a Llama-family decoder (Llama 1/2/3, SmolLM2, ...)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None: hidden_size // num_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2
    pad_token_id: int | None = None
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LlamaConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LlamaConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"LlamaConfig.hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
                "set head_dim explicitly"
            )
        if self.resolved_head_dim % 2:
            raise ValueError(f"LlamaConfig.head_dim must be even for RoPE, got {self.resolved_head_dim}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"LlamaConfig.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if isinstance(self.eos_token_id, list):  # keep the dataclass hashable
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def replace(self, **changes: Any) -> LlamaConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> LlamaConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"Unknown model preset {name!r}; known presets: {sorted(PRESETS)}") from None


_LLAMA2_7B = LlamaConfig(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_layers=32,
    num_heads=32,
    num_kv_heads=32,
    rms_norm_eps=1e-5,
    max_position_embeddings=4096,
)
_LLAMA2_13B = _LLAMA2_7B.replace(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40, num_kv_heads=40)
_SMOLLM2_135M = LlamaConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
# Tiny configs for tests: each exercises one feature the real presets might not.
_TINY = LlamaConfig(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

PRESETS: dict[str, LlamaConfig] = {
    "llama-2-7b": _LLAMA2_7B,
    "llama-2-13b": _LLAMA2_13B,
    "smollm2-135m": _SMOLLM2_135M,
    # PRIME catalogue names.
    "prime-7b-chat": _LLAMA2_7B,
    "prime-13b-reasoning": _LLAMA2_13B,
    "prime-135m-chat": _SMOLLM2_135M,
    # Tests.
    "tiny": _TINY,
    "tiny-tied": _TINY.replace(tie_word_embeddings=True),
    "tiny-mha": _TINY.replace(num_kv_heads=4),
    "tiny-llama3": _TINY.replace(
        rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", factor=8.0, original_max_position_embeddings=64),
    ),
    "tiny-linear-rope": _TINY.replace(rope_scaling=RopeScaling("linear", factor=2.0)),
}

# Exact parameter counts; a test checks every preset against them.
PRESET_PARAM_COUNTS = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "smollm2-135m": 134_515_008,
    "prime-7b-chat": 6_738_415_616,
    "prime-13b-reasoning": 13_015_864_320,
    "prime-135m-chat": 134_515_008,
    "tiny": 106_816,
    "tiny-tied": 90_432,
    "tiny-mha": 115_008,
    "tiny-llama3": 106_816,
    "tiny-linear-rope": 106_816,
}


def param_count(config: LlamaConfig) -> int:
    """Number of parameters, computed from abstract shapes (no weights are allocated)."""
    import jax
    from flax import nnx

    from reactor_core.models.llama import Llama

    abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    return sum(math.prod(leaf.shape) for leaf in leaves)


# ---- Hugging Face config.json <-> LlamaConfig ----

_HF_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def from_hf_config(hf: dict[str, Any], *, source: str = "config.json") -> LlamaConfig:
    """Builds a LlamaConfig from a HF `config.json` dict. Unknown keys are ignored."""
    model_type = hf.get("model_type", "llama")
    if model_type not in ("llama", "mistral"):
        raise ValueError(f"{source}: unsupported model_type {model_type!r}; reactor reads 'llama' models")
    missing = [k for k in _HF_REQUIRED if k not in hf]
    if missing:
        raise ValueError(f"{source}: missing required key(s) {missing}")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError(f"{source}: attention_bias/mlp_bias are not supported")
    # transformers 5 nests rope settings in `rope_parameters`; older files use rope_theta + rope_scaling.
    rope = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    merged = {**scaling, **rope}
    rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"{source}: unsupported rope type {rope_type!r}; supported: {ROPE_TYPES}")
    rope_scaling = RopeScaling(
        rope_type=rope_type,
        factor=float(merged.get("factor", 1.0)),
        low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
        high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(merged.get("original_max_position_embeddings", 8192)),
    )
    num_heads = int(hf["num_attention_heads"])
    eos = hf.get("eos_token_id", 2)
    return LlamaConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim=hf.get("head_dim"),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=hf.get("pad_token_id"),
    )


def to_hf_config(config: LlamaConfig, *, torch_dtype: str | None = None) -> dict[str, Any]:
    """The HF `config.json` dict for `config`, readable by transformers and mlx-lm."""
    eos = config.eos_token_id
    hf: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.resolved_head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
        "pad_token_id": config.pad_token_id,
        "torch_dtype": _TORCH_DTYPES[torch_dtype or config.param_dtype],
    }
    rs = config.rope_scaling
    if rs.rope_type == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": rs.factor}
    elif rs.rope_type == "llama3":
        hf["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": rs.factor,
            "low_freq_factor": rs.low_freq_factor,
            "high_freq_factor": rs.high_freq_factor,
            "original_max_position_embeddings": rs.original_max_position_embeddings,
        }
    return hf
