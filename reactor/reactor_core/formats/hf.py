"""Hugging Face Llama directories: `config.json` + `model.safetensors` (or index + shards).

Reading goes shard by shard and tensor by tensor from memory maps, so peak memory is the
model plus one tensor, never two copies of a 13B checkpoint. Writing uses the same layout
transformers and mlx-lm produce (shards up to 5 GB by default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from reactor_core.formats import safetensors_io
from reactor_core.models.config import LlamaConfig, from_hf_config, to_hf_config
from reactor_core.models.llama import Llama

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
_IGNORED = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint is missing files or tensors, or a tensor has the wrong shape."""


# ---- names: NNX path <-> HF tensor name ----


def hf_name(path: tuple) -> tuple[str, bool]:
    """NNX param path -> (HF tensor name, whether the array is transposed in HF layout)."""
    *parents, leaf = (str(p) for p in path)
    if leaf == "kernel":
        return ".".join(parents + ["weight"]), True
    if leaf == "embedding":
        return ".".join(parents + ["weight"]), False
    return ".".join(parents + [leaf]), False


def param_paths(model: nnx.Module) -> dict[str, tuple[tuple, nnx.Param]]:
    """HF name -> (NNX path, Param) for every parameter of `model`."""
    out = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            out[hf_name(path)[0]] = (path, node)
    return out


def to_hf_tensors(model: Llama, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (HF name, numpy array in HF layout) for every parameter."""
    for name, get in to_hf_tensors_lazy(model, dtype):
        yield name, get()


# ---- reading ----


def read_config(path: str) -> LlamaConfig:
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise CheckpointError(f"{path}: no config.json; is this a Hugging Face model directory?")
    with open(config_path) as f:
        return from_hf_config(json.load(f), source=config_path)


def shard_files(path: str) -> list[str]:
    """The safetensors files of a HF dir, in order; each must exist."""
    index_path = os.path.join(path, INDEX_FILE)
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
        for name in files:
            if not os.path.exists(os.path.join(path, name)):
                tensors = sorted(t for t, fn in weight_map.items() if fn == name)
                raise CheckpointError(
                    f"{path}: shard {name} listed in {INDEX_FILE} is missing (holds {len(tensors)} tensors, "
                    f"e.g. {tensors[0]})"
                )
        return [os.path.join(path, n) for n in files]
    single = os.path.join(path, SINGLE_FILE)
    if not os.path.exists(single):
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    return [single]


def abstract_model(config: LlamaConfig) -> Llama:
    """A model whose params are shape placeholders: nothing is allocated until assigned."""
    return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))


def fill_params(
    model: Llama, tensors: Iterable[tuple[str, np.ndarray, str]], *, transform=None
) -> Llama:
    """Assigns (HF name, HF-layout array, source file) tensors to an abstract model's params.

    `transform(name, array)` may rewrite an array first (GGUF uses it to unpermute q/k).
    Raises CheckpointError naming the file and tensor on a shape mismatch or a missing tensor.
    """
    params = param_paths(model)
    seen = set()
    for name, arr, source in tensors:
        if name.endswith(_IGNORED):
            continue
        if name not in params:
            if name == "lm_head.weight" and model.config.tie_word_embeddings:
                continue  # some tied checkpoints still store the head
            raise CheckpointError(f"{source}: unexpected tensor {name!r} for a Llama model")
        path, param = params[name]
        if transform is not None:
            arr = transform(name, arr)
        transposed = hf_name(path)[1]
        want = tuple(param.get_value().shape[::-1] if transposed else param.get_value().shape)
        if tuple(arr.shape) != want:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(arr.shape)}, model expects {want}")
        value = jnp.asarray(arr, dtype=param.get_value().dtype)  # one tensor copy at a time
        param.set_value(value.T if transposed else value)
        seen.add(name)
    missing = sorted(set(params) - seen)
    if missing:
        raise CheckpointError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    return model


def load_hf_dir(path: str, *, dtype: str | None = None, param_dtype: str | None = None) -> tuple[Llama, LlamaConfig]:
    """Loads a HF Llama directory. `dtype`/`param_dtype` override compute and storage dtypes."""
    config = read_config(path)
    config = config.replace(dtype=dtype or config.dtype, param_dtype=param_dtype or dtype or config.param_dtype)
    model = abstract_model(config)

    def tensors():
        for file in shard_files(path):
            for name, arr in safetensors_io.iter_tensors(file):
                yield name, arr, file

    return fill_params(model, tensors()), config


# ---- writing ----


def save_hf_dir(
    model: Llama,
    path: str,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """Writes config.json and safetensors (sharded with an index above `max_shard_bytes`)."""
    config = model.config
    os.makedirs(path, exist_ok=True)
    hf_config = to_hf_config(config, torch_dtype=dtype or config.param_dtype)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    _remove_weights(path)
    shards: list[list[str]] = [[]]
    sizes = [0]
    for name, (_, param) in param_paths(model).items():
        nbytes = param.get_value().size * jnp.dtype(dtype or param.get_value().dtype).itemsize
        if shards[-1] and sizes[-1] + nbytes > max_shard_bytes:
            shards.append([])
            sizes.append(0)
        shards[-1].append(name)
        sizes[-1] += nbytes
    names = dict(to_hf_tensors_lazy(model, dtype))
    if len(shards) == 1:
        safetensors_io.save({n: names[n]() for n in shards[0]}, os.path.join(path, SINGLE_FILE))
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        safetensors_io.save({n: names[n]() for n in shard}, os.path.join(path, file))
        weight_map.update({n: file for n in shard})
    with open(os.path.join(path, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}, f, indent=2)


def to_hf_tensors_lazy(model: Llama, dtype=None):
    """(HF name, thunk) pairs: each shard converts only its own tensors to numpy."""
    for name, (path, param) in param_paths(model).items():
        transposed = hf_name(path)[1]

        def get(param=param, transposed=transposed, name=name):
            if not isinstance(param.get_value(), jax.Array):
                raise CheckpointError(f"parameter {name} is not a plain array (quantized models cannot be saved)")
            arr = np.asarray(param.get_value() if dtype is None else param.get_value().astype(dtype))
            return arr.T if transposed else arr

        yield name, get


def _remove_weights(path: str) -> None:
    """Removes weight files of an older save so the directory holds one consistent layout."""
    for name in os.listdir(path):
        if name == INDEX_FILE or (name.startswith("model") and name.endswith(".safetensors")):
            os.remove(os.path.join(path, name))
