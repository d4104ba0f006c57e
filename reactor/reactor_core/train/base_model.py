"""The model to train: base weights + tokenizer from ModelConfig, then QLoRA/LoRA surgery.

model, tokenizer, source = load_base(config.model, full_finetune=not config.lora.enabled)
prepare(model, config.lora, config.quant, seed=config.run.seed)
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from reactor_core.lora import lora as lora_lib
from reactor_core.lora.quant import QuantizedLinear
from reactor_core.models.config import PRESET_PARAM_COUNTS, LlamaConfig
from reactor_core.models.llama import Llama

RANDOM = "random"  # model.path value: random init of the preset (tests, benchmarks)

# Hub repositories for presets whose weights don't ship offline (GPU/TPU VMs with internet).
HUB_IDS = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "prime-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
    "prime-13b-reasoning": "meta-llama/Llama-2-13b-chat-hf",
}


def num_params(model_config) -> int | None:
    """Parameter count of the preset, known without reading weights (None for custom paths)."""
    if model_config.path and model_config.path != RANDOM:
        return None
    return PRESET_PARAM_COUNTS.get(model_config.name)


def storage_dtypes(model_config, *, full_finetune: bool) -> tuple[str, str]:
    """(compute dtype, base storage dtype): a frozen base sits in the compute dtype."""
    return model_config.dtype, "float32" if full_finetune else model_config.dtype


def load_base(model_config, *, full_finetune: bool, seed: int = 0, tokenizer: bool = True, quant_config=None):
    """(Llama, tokenizer (None when not asked for or with random weights), source path or name).

    With a quant_config other than "none", decoder linears are quantised as they are read,
    so the dense base is never in memory at once (QLoRA's point).
    """
    dtype, param_dtype = storage_dtypes(model_config, full_finetune=full_finetune)
    if model_config.path == RANDOM:
        cfg = LlamaConfig.preset(model_config.name).replace(dtype=dtype, param_dtype=param_dtype)
        return Llama(cfg, rngs=nnx.Rngs(seed)), None, RANDOM
    from reactor_core.formats.pretrained import hf_dir_for, load_pretrained

    source = model_config.path or model_config.name
    try:
        path = hf_dir_for(source)  # GGUF sources are converted (and cached) here
    except FileNotFoundError:
        if model_config.path or source not in HUB_IDS:
            raise
        path = _hub_download(source)
    if quant_config is not None and quant_config.mode != "none":
        return load_quantized(path, quant_config, dtype=dtype), (_tokenizer(path) if tokenizer else None), path
    bundle = load_pretrained(path, dtype=dtype, param_dtype=param_dtype, tokenizer=tokenizer)
    return bundle.model, bundle.tokenizer, bundle.path


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_quantized(path: str, quant_config, *, dtype: str) -> Llama:
    """A HF Llama directory read tensor by tensor, decoder linears quantised on arrival.

    Peak memory is the quantised model plus one float tensor, not the dense base.
    """
    from reactor_core.formats import hf, safetensors_io

    config = hf.read_config(path).replace(dtype=dtype, param_dtype=dtype)
    model = hf.abstract_model(config)
    params = hf.param_paths(model)
    seen = set()
    for file in hf.shard_files(path):
        for name, arr in safetensors_io.iter_tensors(file):
            if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and config.tie_word_embeddings):
                continue
            if name not in params:
                raise hf.CheckpointError(f"{file}: unexpected tensor {name!r} for a Llama model")
            nnx_path, param = params[name]
            transposed = hf.hf_name(nnx_path)[1]
            want = tuple(param.get_value().shape)
            got = tuple(arr.shape[::-1] if transposed else arr.shape)
            if got != want:
                raise hf.CheckpointError(f"{file}: tensor {name!r} has shape {tuple(arr.shape)}, model expects {want}")
            if transposed and "layers" in nnx_path:  # a decoder linear's kernel: quantise now
                kernel = jnp.asarray(arr, jnp.float32).T  # (in, out)
                layer = QuantizedLinear(
                    kernel,
                    mode=quant_config.mode,
                    block_size=quant_config.block_size,
                    double_quant=quant_config.double_quant,
                    dtype=config.dtype,
                )
                lora_lib.set_child(model, nnx_path[:-1], layer)
            else:
                value = jnp.asarray(arr, param.get_value().dtype)
                param.set_value(value.T if transposed else value)
            seen.add(name)
    missing = sorted(set(params) - seen)
    if missing:
        raise hf.CheckpointError(f"{path}: checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    return model


def _hub_download(name: str) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError(f"downloading {name} needs `huggingface_hub`: pip install huggingface_hub") from e
    repo = HUB_IDS[name]
    try:
        return snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "tokenizer*"])
    except Exception as e:  # network, auth (Llama 2 is gated), disk
        raise FileNotFoundError(
            f"weights for {name!r} are not on this machine and downloading {repo} failed ({e}). "
            "Pass model_path=<local HF dir or .gguf> (--model_path)."
        ) from e


def prepare(model: Llama, lora_config, quant_config, *, remat: bool = False, seed: int = 0) -> Llama:
    """Quantises the frozen base (QLoRA), adds adapters, turns on remat; in place."""
    if remat:
        model.config = model.config.replace(remat=True)
    if lora_config.enabled:
        if any(True for _ in lora_lib.lora_layers(model)):
            return model  # already adapted (a second train() call): keep training these adapters
        lora_lib.quantize_base(model, quant_config)
        lora_lib.apply_lora(model, lora_config, rngs=nnx.Rngs(params=seed + 1, dropout=seed + 2))
    return model
