"""Training memory from shapes alone: base + adapter + optimizer bytes via jax.eval_shape.

    training_memory(LlamaConfig.preset("llama-2-7b"), LoraConfig(), QuantConfig(mode="nf4"))
    # {'base': ~3.9e9, 'adapter': ..., 'optimizer': ..., 'total': ...}

Nothing is allocated, so a 13B preset is sized on a laptop. Activations are not counted
(they depend on batch, sequence length and remat).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from reactor_core.lora import lora as lora_lib
from reactor_core.models.llama import Llama


def _bytes(tree) -> int:
    return sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def training_memory(
    model_config, lora_config, quant_config, *, dtype: str = "bfloat16", optimizer=None
) -> dict[str, int]:
    """Bytes of frozen base weights, trainable adapters and optimizer state (AdamW by default)."""
    import optax

    cfg = model_config.replace(dtype=dtype, param_dtype=dtype)

    def build():
        model = Llama(cfg, rngs=nnx.Rngs(0))
        lora_lib.quantize_base(model, quant_config)
        lora_lib.apply_lora(model, lora_config, rngs=nnx.Rngs(1))
        return model

    model = nnx.eval_shape(build)
    adapter = nnx.state(model, lora_lib.TRAINABLE)
    base = nnx.state(model, nnx.Not(lora_lib.TRAINABLE))
    tx = optimizer or optax.adamw(1e-4)
    opt_state = jax.eval_shape(tx.init, adapter)
    out = {"base": _bytes(base), "adapter": _bytes(adapter), "optimizer": _bytes(opt_state)}
    out["total"] = sum(out.values())
    return out


def format_table(rows: dict[str, dict[str, int]]) -> str:
    """A text table: one row per setting, GB columns."""
    lines = [f"{'setting':<24}{'base GB':>10}{'adapter GB':>12}{'optim GB':>10}{'total GB':>10}"]
    for name, m in rows.items():
        lines.append(
            f"{name:<24}{m['base'] / 1e9:>10.2f}{m['adapter'] / 1e9:>12.3f}{m['optimizer'] / 1e9:>10.3f}{m['total'] / 1e9:>10.2f}"
        )
    return "\n".join(lines)
