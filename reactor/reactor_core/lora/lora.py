"""LoRA as tree surgery on an NNX model: apply, split trainable, switch off, merge.

    quantize_base(model, QuantConfig(mode="nf4"))     # optional: QLoRA's frozen NF4 base
    apply_lora(model, LoraConfig(rank=16), rngs=nnx.Rngs(0))
    trainable = nnx.state(model, TRAINABLE)           # only lora_a / lora_b
    with disabled(model): base_logits = model(tokens)
    merge_lora(model)                                 # plain nnx.Linear layers again

A wrapped layer computes base(x) + dropout(x) @ A @ B * scale with A (in, r) random
and B (r, out) zero, so the model at step 0 is exactly the base model. Adapters are
float32 master weights, cast to the compute dtype in the forward pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from reactor_core.lora.quant import QuantizedLinear

# What the optimizer sees when LoRA is on; everything else is frozen.
TRAINABLE = nnx.LoRAParam


class LoRALinear(nnx.Module):
    """base(x) + (dropout(x) @ lora_a @ lora_b) * scale, with a frozen `base`."""

    def __init__(self, base: nnx.Linear | QuantizedLinear, *, rank: int, scale: float, dropout: float, rngs: nnx.Rngs):
        n_in, n_out = base.in_features, base.out_features
        self.base = base
        self.rank = rank
        self.scale = scale
        self.enabled = True
        in_axis, out_axis = _kernel_axes(base)
        # PEFT's init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        bound = 1.0 / math.sqrt(n_in)
        a = jax.random.uniform(rngs.params(), (n_in, rank), jnp.float32, -bound, bound)
        self.lora_a = nnx.LoRAParam(a, out_sharding=(in_axis, None), eager_sharding=False)
        self.lora_b = nnx.LoRAParam(
            jnp.zeros((rank, n_out), jnp.float32), out_sharding=(None, out_axis), eager_sharding=False
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.base(x)  # (..., out)
        if not self.enabled:
            return y
        h = x if self.dropout is None else self.dropout(x)
        h = jnp.dot(h.astype(y.dtype), self.lora_a.get_value().astype(y.dtype))  # (..., r)
        return y + jnp.dot(h * jnp.asarray(self.scale, y.dtype), self.lora_b.get_value().astype(y.dtype))  # (..., out)

    def delta(self) -> jax.Array:
        """The float32 kernel update A @ B * scale, (in, out)."""
        return (self.lora_a.get_value() @ self.lora_b.get_value()) * self.scale


def _kernel_axes(base) -> tuple[str | None, str | None]:
    kernel = getattr(base, "kernel", None)
    names = kernel.get_metadata().get("out_sharding") if kernel is not None else None
    return tuple(names) if names else (None, None)


def _linear_layers(model: nnx.Module, types) -> list[tuple[tuple, nnx.Module]]:
    return [(path, m) for path, m in nnx.iter_modules(model) if isinstance(m, types) and path]


def set_child(model: nnx.Module, path: tuple, child: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    setattr(parent, path[-1], child)


def _in_decoder(path: tuple) -> bool:
    return "layers" in path  # never the embedding or lm_head


def quantize_base(model: nnx.Module, quant_config) -> nnx.Module:
    """Replaces every decoder-layer linear with a QuantizedLinear (in place). Returns `model`."""
    if quant_config.mode == "none":
        return model
    for path, linear in _linear_layers(model, nnx.Linear):
        if _in_decoder(path):
            q = QuantizedLinear.from_linear(
                linear,
                mode=quant_config.mode,
                block_size=quant_config.block_size,
                double_quant=quant_config.double_quant,
            )
            set_child(model, path, q)
    return model


def apply_lora(model: nnx.Module, lora_config, *, rngs: nnx.Rngs) -> nnx.Module:
    """Wraps the decoder linears named in lora_config.targets with LoRALinear (in place)."""
    targets = set(lora_config.targets)
    wrapped = 0
    for path, linear in _linear_layers(model, (nnx.Linear, QuantizedLinear)):
        if _in_decoder(path) and path[-1] in targets:
            layer = LoRALinear(
                linear, rank=lora_config.rank, scale=lora_config.scale, dropout=lora_config.dropout, rngs=rngs
            )
            set_child(model, path, layer)
            wrapped += 1
    if not wrapped:
        raise ValueError(f"lora.targets {lora_config.targets} matched no linear layer of {type(model).__name__}")
    return model


def lora_layers(model: nnx.Module) -> Iterator[tuple[tuple, LoRALinear]]:
    """(path, layer) of every LoRALinear, in model order."""
    for path, m in nnx.iter_modules(model):
        if isinstance(m, LoRALinear):
            yield path, m


@contextlib.contextmanager
def disabled(model: nnx.Module):
    """Inside the block the model computes its base outputs (DPO's reference, no copy)."""
    layers = [m for _, m in lora_layers(model)]
    before = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, was in zip(layers, before):
            m.enabled = was


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every adapter into its base kernel, leaving plain nnx.Linear layers (in place).

    Quantised bases are dequantised first; the merged kernel keeps the base's compute
    dtype. Returns `model`.
    """
    for path, layer in list(lora_layers(model)):
        base = layer.base
        if isinstance(base, QuantizedLinear):
            kernel = base.dequantize(jnp.float32) + layer.delta()
            merged = nnx.Linear(
                base.in_features,
                base.out_features,
                use_bias=False,
                dtype=base.dtype,
                param_dtype=base.dtype,
                kernel_init=lambda *_, k=kernel, d=base.dtype: k.astype(d),
                rngs=nnx.Rngs(0),
            )
        else:
            merged = base
            kernel = base.kernel.get_value().astype(jnp.float32) + layer.delta()
            merged.kernel.set_value(kernel.astype(base.kernel.get_value().dtype))
        set_child(model, path, merged)
    return model
