"""MLX backend: mlx-lm's Llama and its `generate_step`, affine 4/8-bit quantization on load.

Runs on Apple Silicon (Metal) and, for tests, on Linux CPU (`mlx[cpu]`). Quantized
models are converted once and kept in the store as mlx-lm directories (config.json with
`quantization: {group_size, bits}`), so the second load reads packed weights directly and
`mlx_lm.load` can open them too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from jarvis_prime.catalogue import GROUP_SIZE, QUANT_BITS
from jarvis_prime.errors import BackendUnavailableError
from jarvis_prime.sampling import Sampling
from jarvis_prime.store import Store, fingerprint

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def _mlx():
    try:
        import mlx.core as mx
        import mlx_lm  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "The MLX backend needs mlx and mlx-lm: pip install mlx mlx-lm (macOS) or 'mlx[cpu]' mlx-lm (Linux)"
        ) from None
    return mx


def available() -> bool:
    try:
        _mlx()
    except BackendUnavailableError:
        return False
    return True


def _device(device: str):
    mx = _mlx()
    if device in ("auto",):
        return mx.default_device()
    if device == "cpu":
        return mx.cpu
    if device in ("gpu", "metal"):
        if not mx.metal.is_available():
            raise BackendUnavailableError(f"device={device!r}: MLX sees no Metal GPU here; use device='cpu' or 'auto'")
        return mx.gpu
    raise BackendUnavailableError(f"device={device!r} is not an MLX device; use 'auto', 'cpu' or 'gpu'")


def _quantize_into(src: str, out: str, bits: int) -> None:
    """Loads the float model at `src`, quantizes it and writes an mlx-lm directory to `out`."""
    from mlx import nn
    from mlx_lm.utils import load_model, save_model

    model, config = load_model(Path(src))
    nn.quantize(model, group_size=GROUP_SIZE, bits=bits, class_predicate=lambda _, m: _quantizable(m))
    save_model(out, model)
    config = {k: v for k, v in config.items() if k != "quantization_config"}
    config["quantization"] = {"group_size": GROUP_SIZE, "bits": bits, "mode": "affine"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in _TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(out, name))


def _quantizable(module) -> bool:
    return hasattr(module, "to_quantized") and module.weight.shape[-1] % GROUP_SIZE == 0


class MLXBackend:
    """Token generation through mlx-lm; one instance per loaded model."""

    name = "mlx"

    def __init__(self, model, *, quantization: str | None, device, path: str):
        self.model = model
        self.quantization = quantization
        self.device = device
        self.path = path  # the directory the weights were read from (mlx-lm layout)
        mx = _mlx()
        self._stream = mx.new_thread_local_stream(device)  # Jarvis generates on worker threads

    @classmethod
    def load(cls, path: str, hf_config: dict, *, quantization: str | None, device: str, store: Store) -> MLXBackend:
        mx = _mlx()
        from mlx_lm.utils import load_model

        dev = _device(device)
        already = hf_config.get("quantization")
        if quantization is not None and not already:
            key = fingerprint(path, quantization, GROUP_SIZE)
            kind = f"mlx-{quantization}"
            if not store.has_converted(kind, key):
                with mx.stream(dev), store.writing(kind, key, {"source": path}) as tmp:
                    _quantize_into(path, tmp, QUANT_BITS[quantization])
            path = store.converted_dir(kind, key)
        elif already:
            quantization = f"{already['bits']}bit"
        with mx.stream(dev):
            model, _ = load_model(Path(path))
        return cls(model, quantization=quantization, device=dev, path=path)

    def tokens(self, prompt_ids: list[int], sampling: Sampling, stop_ids=frozenset()) -> Iterator[int]:
        """Yields generated token ids, one model step each; prefill happens on the first."""
        mx = _mlx()
        from mlx_lm.generate import generate_step

        sampler = _sampler(mx, sampling)
        processors = (
            [_repetition_penalty(mx, sampling.repetition_penalty)] if sampling.repetition_penalty != 1 else None
        )
        steps = generate_step(
            mx.array(prompt_ids, dtype=mx.uint32),
            self.model,
            self._stream,
            max_tokens=sampling.max_tokens,
            sampler=sampler,
            logits_processors=processors,
        )
        try:
            for token, _ in steps:
                yield int(token)
        finally:
            steps.close()

    def score(self, ids: list[int]):
        """One forward pass over `ids`: (log p(ids[t+1] | ids[:t+1]), argmax prediction) per t, each (T-1,)."""
        import numpy as np

        mx = _mlx()
        with mx.stream(self._stream):
            tokens = mx.array(ids, dtype=mx.uint32)[None]
            logits = self.model(tokens[:, :-1]).astype(mx.float32)  # (1, T-1, V)
            logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            picked = mx.take_along_axis(logp, tokens[:, 1:, None].astype(mx.int32), axis=-1)[0, :, 0]
            return np.array(picked), np.array(mx.argmax(logp[0], axis=-1))


def _sampler(mx, s: Sampling):
    """Greedy, or temperature + top-k / top-p / min-p with a per-stream PRNG key."""
    if s.greedy:
        return lambda logprobs: mx.argmax(logprobs, axis=-1)
    key = [mx.random.key(s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little"))]
    neg_inf = mx.array(-float("inf"), mx.float32)

    def sample(logprobs):
        logits = logprobs.astype(mx.float32) / s.temperature  # (1, V)
        if s.top_k > 0 or s.top_p < 1:
            ordered = -mx.sort(-logits, axis=-1)  # (1, V) descending
            keep = mx.ones(ordered.shape, dtype=mx.bool_)
            if s.top_k > 0:
                keep = mx.arange(ordered.shape[-1])[None] < s.top_k
                ordered = mx.where(keep, ordered, neg_inf)
            if s.top_p < 1:
                probs = mx.softmax(ordered, axis=-1)
                keep = keep & ((mx.cumsum(probs, axis=-1) - probs) < s.top_p)
            count = mx.maximum(keep.sum(axis=-1, keepdims=True), 1)
            threshold = mx.take_along_axis(ordered, count - 1, axis=-1)  # (1, 1) smallest kept logit
            logits = mx.where(logits < threshold, neg_inf, logits)
        if s.min_p > 0:
            probs = mx.softmax(logits, axis=-1)
            logits = mx.where(probs < s.min_p * probs.max(axis=-1, keepdims=True), neg_inf, logits)
        key[0], sub = mx.random.split(key[0])
        return mx.random.categorical(logits, key=sub)

    return sample


def _repetition_penalty(mx, penalty: float):
    """Hugging Face semantics over every token seen so far (prompt included)."""

    def process(tokens, logits):
        seen = logits[:, tokens]  # (1, T)
        seen = mx.where(seen > 0, seen / penalty, seen * penalty)
        logits[:, tokens] = seen
        return logits

    return process
