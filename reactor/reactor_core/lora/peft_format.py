"""Hugging Face PEFT adapters: `adapter_config.json` + `adapter_model.safetensors`.

    save_adapter(model, lora_config, "out/adapter", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    load_adapter(model, "out/adapter")            # model already wrapped by apply_lora
    save_merged(model, "out/merged", tokenizer)   # a plain HF Llama directory

PEFT stores lora_A.weight as (r, in) and lora_B.weight as (out, r), the transposes of
our (in, r) and (r, out), under `base_model.model.<HF module path>`.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from reactor_core.formats import hf, safetensors_io
from reactor_core.lora.lora import LoRALinear, lora_layers, merge_lora

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def _module_name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def adapter_config(lora_config, *, base_model: str = "") -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or None,
        "r": lora_config.rank,
        "lora_alpha": lora_config.alpha,
        "lora_dropout": lora_config.dropout,
        "use_rslora": lora_config.rslora,
        "target_modules": list(lora_config.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_dora": False,
    }


def adapter_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
    """PEFT tensor name -> float32 array in PEFT layout."""
    out = {}
    for path, layer in lora_layers(model):
        name = _PREFIX + _module_name(path)
        out[f"{name}.lora_A.weight"] = np.asarray(layer.lora_a.get_value(), np.float32).T  # (r, in)
        out[f"{name}.lora_B.weight"] = np.asarray(layer.lora_b.get_value(), np.float32).T  # (out, r)
    if not out:
        raise ValueError("the model has no LoRA layers; call apply_lora first")
    return out


def save_adapter(model: nnx.Module, lora_config, path: str, *, base_model: str = "") -> str:
    """Writes the adapter of `model` as a PEFT directory. Returns `path`."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(adapter_config(lora_config, base_model=base_model), f, indent=2)
    safetensors_io.save(adapter_tensors(model), os.path.join(path, WEIGHTS_FILE), metadata={"format": "pt"})
    return path


def load_adapter(model: nnx.Module, path: str) -> nnx.Module:
    """Fills the LoRA weights of a model wrapped with the same rank/targets from a PEFT dir."""
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.exists(weights_path):
        raise FileNotFoundError(f"{path}: no {WEIGHTS_FILE}; is this a PEFT adapter directory?")
    tensors = dict(safetensors_io.iter_tensors(weights_path))
    layers: dict[str, LoRALinear] = {_PREFIX + _module_name(p): m for p, m in lora_layers(model)}
    for name, layer in layers.items():
        for key, var in (("lora_A", layer.lora_a), ("lora_B", layer.lora_b)):
            tensor_name = f"{name}.{key}.weight"
            # PEFT may omit the adapter name or include ".default"; accept both.
            arr = tensors.pop(tensor_name, None)
            if arr is None:
                arr = tensors.pop(f"{name}.{key}.default.weight", None)
            if arr is None:
                raise ValueError(f"{weights_path}: missing {tensor_name}")
            if arr.T.shape != var.get_value().shape:
                raise ValueError(
                    f"{weights_path}: {tensor_name} has shape {arr.shape}, expected {var.get_value().shape[::-1]}"
                )
            var.set_value(jnp.asarray(arr.T, jnp.float32))
    if tensors:
        raise ValueError(f"{weights_path}: {len(tensors)} tensor(s) match no LoRA layer, e.g. {sorted(tensors)[:2]}")
    return model


def save_merged(model: nnx.Module, path: str, *, tokenizer=None, dtype: str | None = None) -> str:
    """Writes base + adapter merged as a plain HF Llama directory (the model is left unmerged)."""
    merged = merge_lora(nnx.clone(model))
    hf.save_hf_dir(merged, path, dtype=dtype)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
