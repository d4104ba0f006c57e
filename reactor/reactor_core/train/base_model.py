"""The model to train: base weights + tokenizer from ModelConfig, then QLoRA/LoRA surgery.

    model, tokenizer, source = load_base(config.model, full_finetune=not config.lora.enabled)
    prepare(model, config.lora, config.quant, seed=config.run.seed)
"""

from __future__ import annotations

from flax import nnx

from reactor_core.lora import lora as lora_lib
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


def load_base(model_config, *, full_finetune: bool, seed: int = 0, tokenizer: bool = True):
    """(Llama, tokenizer (None when not asked for or with random weights), source path or name)."""
    dtype, param_dtype = storage_dtypes(model_config, full_finetune=full_finetune)
    if model_config.path == RANDOM:
        cfg = LlamaConfig.preset(model_config.name).replace(dtype=dtype, param_dtype=param_dtype)
        return Llama(cfg, rngs=nnx.Rngs(seed)), None, RANDOM
    from reactor_core.formats.pretrained import load_pretrained

    source = model_config.path or model_config.name
    try:
        bundle = load_pretrained(source, dtype=dtype, param_dtype=param_dtype, tokenizer=tokenizer)
    except FileNotFoundError:
        if model_config.path or source not in HUB_IDS:
            raise
        bundle = load_pretrained(_hub_download(source), dtype=dtype, param_dtype=param_dtype, tokenizer=tokenizer)
    return bundle.model, bundle.tokenizer, bundle.path


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
        lora_lib.quantize_base(model, quant_config)
        lora_lib.apply_lora(model, lora_config, rngs=nnx.Rngs(params=seed + 1, dropout=seed + 2))
    return model
