"""GGUF (llama.cpp) read and write for llama-architecture models, through the `gguf` package.

Quantized tensors are dequantized to float32: Q8_0/Q4_0/Q4_1 through MLForge's codecs when
`mlforge` is importable, everything else (F16, BF16, Q4_K, Q6_K, ...) through
`gguf.quants.dequantize`. llama.cpp stores q/k rows permuted for interleaved RoPE; they are
permuted back to HF's half-split layout here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from reactor_core.formats.hf import CheckpointError, abstract_model, fill_params, to_hf_tensors
from reactor_core.models.config import LlamaConfig, RopeScaling
from reactor_core.models.llama import Llama

_MLFORGE_TYPES = ("Q8_0", "Q4_0", "Q4_1")

# GGUF tensor name pieces <-> HF names (per layer, after `blk.N.` / `model.layers.N.`).
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf") from e
    return gguf


def hf_name_from_gguf(name: str, source: str) -> str:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_NAMES and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight"
    raise CheckpointError(f"{source}: unexpected tensor {name!r} for a llama GGUF")


def gguf_name_from_hf(name: str) -> str:
    inverse = {v: k for k, v in _GLOBAL_NAMES.items()}
    if name in inverse:
        return inverse[name]
    parts = name.split(".")  # model.layers.N.<piece...>.weight
    piece = ".".join(parts[3:-1])
    short = {v: k for k, v in _LAYER_NAMES.items()}[piece]
    return f"blk.{parts[2]}.{short}.weight"


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's interleaved-RoPE row order -> HF's half-split order; w is (n_heads*D, E)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's half-split row order -> llama.cpp's interleaved order (inverse of unpermute_qk)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantize(data: np.ndarray, qtype_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw GGUF tensor data -> float32 array of `shape` (numpy order, rows first)."""
    if qtype_name in _MLFORGE_TYPES:
        try:
            import mlforge

            out = mlforge.gguf_dequantize(np.ascontiguousarray(data), qtype_name, tuple(shape))
            return np.asarray(out, dtype=np.float32).reshape(shape)
        except (ImportError, AttributeError):
            pass  # MLForge not built here: the gguf package's numpy codecs are exact too
    gguf = _gguf()
    qtype = gguf.GGMLQuantizationType[qtype_name]
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return np.asarray(data).astype(np.float32).reshape(shape)
    return gguf.quants.dequantize(np.asarray(data), qtype).astype(np.float32).reshape(shape)


def _check_tensor_extents(reader, path: str, start: int, fields) -> None:
    """Names the first tensor whose data runs past the end of the file."""
    gguf = _gguf()
    size = len(reader.data)
    for field in fields:
        _, name, _, dims, raw_type, offset = field.parts
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(raw_type[0]))]
        end = start + int(offset[0]) + int(np.prod(dims)) * type_size // block
        if end > size:
            raise CheckpointError(
                f"{path}: truncated GGUF file: tensor {bytes(name).decode()!r} needs bytes up to {end}, file has {size}"
            )


class _Reader:
    """A validated GGUFReader: every failure names the file (and the tensor when there is one)."""

    def __init__(self, path: str):
        gguf = _gguf()
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: file not found")
        self.path = path

        class CheckedReader(gguf.GGUFReader):
            def _build_tensors(self, start_offs, fields):  # gguf's hook, before it slices tensor data
                _check_tensor_extents(self, path, start_offs, fields)
                super()._build_tensors(start_offs, fields)

        try:
            self.reader = CheckedReader(path)
        except CheckpointError:
            raise
        except Exception as e:  # the reader raises bare ValueErrors/IndexErrors on damaged files
            raise CheckpointError(f"{path}: not a readable GGUF file (truncated or corrupt?): {e}") from e
        size = os.path.getsize(path)
        for t in self.reader.tensors:
            end = int(t.data_offset) + int(t.n_bytes)
            if end > size or t.data.nbytes != int(t.n_bytes):
                raise CheckpointError(
                    f"{path}: truncated GGUF file: tensor {t.name!r} needs bytes up to {end}, file has {size}"
                )

    def field(self, key: str, default=None):
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def require(self, key: str):
        value = self.field(key)
        if value is None:
            raise CheckpointError(f"{self.path}: GGUF metadata key {key!r} is missing")
        return value


def read_config(path: str, reader: _Reader | None = None) -> LlamaConfig:
    r = reader or _Reader(path)
    arch = r.require("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: unsupported GGUF architecture {arch!r}; reactor reads 'llama'")
    names = {t.name for t in r.reader.tensors}
    if "rope_freqs.weight" in names:
        raise CheckpointError(f"{path}: tensor 'rope_freqs.weight' (llama3 rope in GGUF) is not supported yet")
    heads = int(r.require("llama.attention.head_count"))
    hidden = int(r.require("llama.embedding_length"))
    tokens = r.field("tokenizer.ggml.tokens")
    vocab = r.field("llama.vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab is None:
        raise CheckpointError(f"{path}: GGUF metadata has neither 'llama.vocab_size' nor tokenizer tokens")
    scaling = RopeScaling()
    if r.field("llama.rope.scaling.type") == "linear":
        scaling = RopeScaling("linear", factor=float(r.require("llama.rope.scaling.factor")))
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(r.require("llama.feed_forward_length")),
        num_layers=int(r.require("llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(r.field("llama.attention.head_count_kv", heads)),
        head_dim=int(r.field("llama.rope.dimension_count", hidden // heads)),
        rms_norm_eps=float(r.field("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(r.field("llama.rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_position_embeddings=int(r.field("llama.context_length", 4096)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=r.field("tokenizer.ggml.bos_token_id"),
        eos_token_id=r.field("tokenizer.ggml.eos_token_id"),
        pad_token_id=r.field("tokenizer.ggml.padding_token_id"),
    )


def iter_hf_tensors(path: str, reader: _Reader | None = None) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yields (HF name, float32 array in HF layout, source) one dequantized tensor at a time."""
    r = reader or _Reader(path)
    for t in r.reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims fastest-first
        name = hf_name_from_gguf(t.name, path)
        try:
            arr = dequantize(t.data, t.tensor_type.name, shape)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot dequantize tensor {t.name!r} ({t.tensor_type.name}): {e}") from e
        yield name, arr, f"{path} (GGUF tensor {t.name})"


def load_gguf(path: str, *, dtype: str = "float32", param_dtype: str | None = None) -> tuple[Llama, LlamaConfig]:
    """Loads a llama GGUF file as a Llama model (weights dequantized to `param_dtype`)."""
    reader = _Reader(path)
    config = read_config(path, reader).replace(dtype=dtype, param_dtype=param_dtype or dtype)

    def fix_rows(name: str, arr: np.ndarray) -> np.ndarray:
        if name.endswith("self_attn.q_proj.weight"):
            return unpermute_qk(arr, config.num_heads)
        if name.endswith("self_attn.k_proj.weight"):
            return unpermute_qk(arr, config.num_kv_heads)
        return arr

    model = fill_params(abstract_model(config), iter_hf_tensors(path, reader), transform=fix_rows)
    return model, config


def save_gguf(model: Llama, path: str, *, qtype: str = "F32") -> None:
    """Writes a llama GGUF (no tokenizer metadata); norms stay F32, matrices use `qtype`."""
    gguf = _gguf()
    cfg = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(cfg.num_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_rope_dimension_count(cfg.resolved_head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    if cfg.rope_scaling.rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(cfg.rope_scaling.factor)
    elif cfg.rope_scaling.rope_type != "default":
        raise ValueError(f"cannot write rope type {cfg.rope_scaling.rope_type!r} to GGUF")
    for key, value in (("bos", cfg.bos_token_id), ("eos", cfg.eos_token_ids[0] if cfg.eos_token_ids else None)):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(int(value))
    quant = gguf.GGMLQuantizationType[qtype]
    for name, arr in to_hf_tensors(model, dtype="float32"):
        if name.endswith("self_attn.q_proj.weight"):
            arr = permute_qk(arr, cfg.num_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            arr = permute_qk(arr, cfg.num_kv_heads)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 1 or quant == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name_from_hf(name), arr)
        else:
            data = gguf.quants.quantize(arr, quant)
            writer.add_tensor(gguf_name_from_hf(name), data, raw_shape=data.shape, raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
