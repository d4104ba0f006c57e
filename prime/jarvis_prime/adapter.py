"""Fine-tuned adapters: merge a PEFT LoRA directory into its base, once, into the store.

A PEFT directory (what Reactor exports) holds `adapter_config.json` (r, lora_alpha,
use_rslora, target_modules) and `adapter_model.safetensors` with Hugging Face PEFT names:

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight   (out, r)

Merging (W += scale * B @ A, scale = alpha / r, or alpha / sqrt(r) with rsLoRA) gives a
plain Hugging Face directory that every backend loads and quantizes like any base.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np

from jarvis_prime.errors import ModelNotAvailableError
from jarvis_prime.store import Store, fingerprint

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_LORA_NAME = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


def read_adapter(path: str) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """Returns (adapter config, {base weight name: (A, B)}, scale); clear errors on bad input."""
    from reactor_core.formats import safetensors_io

    def bad(what: str) -> ModelNotAvailableError:
        return ModelNotAvailableError(f"Adapter {path} is not usable: {what}")

    if not os.path.isdir(path):
        raise ModelNotAvailableError(f"No adapter directory at {path} (expected {CONFIG} + {WEIGHTS})")
    for name in (CONFIG, WEIGHTS):
        if not os.path.isfile(os.path.join(path, name)):
            raise bad(f"{name} is missing (a PEFT LoRA directory holds {CONFIG} and {WEIGHTS})")
    try:
        with open(os.path.join(path, CONFIG)) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise bad(f"{CONFIG} is not valid JSON ({e})") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise bad(f"peft_type {config.get('peft_type')!r} is not supported; Prime merges LoRA adapters")
    if config.get("fan_in_fan_out"):
        raise bad("fan_in_fan_out adapters (GPT-2 Conv1D layout) do not apply to Llama models")
    r = config.get("r")
    if not isinstance(r, int) or r <= 0:
        raise bad(f"{CONFIG}: r must be a positive integer, got {r!r}")
    alpha = float(config.get("lora_alpha", r))
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    try:
        tensors = safetensors_io.load(os.path.join(path, WEIGHTS))
    except ValueError as e:
        raise bad(str(e)) from None
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, arr in tensors.items():
        m = _LORA_NAME.match(name)
        if m is None:
            raise bad(f"tensor {name!r} is not a LoRA A/B weight (only LoRA on linear layers is supported)")
        pairs.setdefault(m["module"] + ".weight", {})[m["ab"]] = arr
    out = {}
    for base_name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise bad(f"{base_name}: lora_{'A' if 'A' not in ab else 'B'} is missing")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise bad(f"{base_name}: lora_A {a.shape} and lora_B {b.shape} do not form (out, r) @ (r, in)")
        out[base_name] = (a, b)
    if not out:
        raise bad(f"{WEIGHTS} holds no LoRA weights")
    return config, out, scale


def merge_into(base: str, adapter: str, out: str) -> None:
    """Writes base + adapter to `out`, shard for shard, with the base's other files copied."""
    from reactor_core.formats import safetensors_io

    _, lora, scale = read_adapter(adapter)
    remaining = set(lora)
    for name in os.listdir(base):
        src = os.path.join(base, name)
        if not os.path.isfile(src):
            continue
        if not (name.startswith("model") and name.endswith(".safetensors")):
            shutil.copy(src, os.path.join(out, name))
            continue
        tensors = {}
        for tname, w in safetensors_io.iter_tensors(src):
            if tname in lora:
                a, b = lora[tname]
                if w.shape != (b.shape[0], a.shape[1]):
                    raise ModelNotAvailableError(
                        f"Adapter {adapter} does not fit base {base}: {tname} is {tuple(w.shape)} in the base, "
                        f"the adapter's B @ A is {(b.shape[0], a.shape[1])}; was it trained on another model?"
                    )
                delta = scale * (b.astype(np.float32) @ a.astype(np.float32))
                w = (w.astype(np.float32) + delta).astype(w.dtype)
                remaining.discard(tname)
            tensors[tname] = w
        safetensors_io.save(tensors, os.path.join(out, name))
    if remaining:
        raise ModelNotAvailableError(
            f"Adapter {adapter} targets {len(remaining)} weight(s) the base {base} does not have, "
            f"e.g. {sorted(remaining)[:3]}; was it trained on another model?"
        )


def merged(base: str, adapter: str, store: Store) -> str:
    """The merged directory for (base, adapter), merging on first use."""
    read_adapter(adapter)  # fail fast, before any copying
    key = fingerprint(base, fingerprint(adapter))
    if not store.has_converted("merged", key):
        with store.writing("merged", key, {"base": base, "adapter": os.path.abspath(adapter)}) as tmp:
            merge_into(base, adapter, tmp)
    return store.converted_dir("merged", key)
