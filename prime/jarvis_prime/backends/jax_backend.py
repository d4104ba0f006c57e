"""JAX backend: reactor's Flax NNX Llama and its jitted prefill/decode `Generator`.

Quantization on load is reactor's weight-only int8 / int4 (`reactor_core.models.quant`):
integer weights in memory, dequantized inside the jitted step right before each matmul.
Float weights compute in float32 on CPU and bfloat16 on accelerators.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from jarvis_prime.catalogue import GROUP_SIZE, QUANT_BITS
from jarvis_prime.errors import BackendUnavailableError, ModelNotAvailableError
from jarvis_prime.sampling import Sampling
from jarvis_prime.store import Store

# Above this, weights are held in bfloat16 even on CPU (a float32 7B would need 27 GB);
# they are upcast inside the step, which costs speed but fits the memory estimate.
_FLOAT32_LIMIT_PARAMS = 2_000_000_000


def _jax():
    try:
        import jax
    except ImportError:
        raise BackendUnavailableError("The JAX backend needs jax and flax: pip install jax flax") from None
    return jax


def available() -> bool:
    try:
        _jax()
    except BackendUnavailableError:
        return False
    return True


def _device(device: str):
    jax = _jax()
    if device == "auto":
        return jax.devices()[0]
    platform = {"gpu": "gpu", "cuda": "gpu", "tpu": "tpu", "cpu": "cpu"}.get(device)
    if platform is None:
        raise BackendUnavailableError(f"device={device!r} is not a JAX device; use 'auto', 'cpu', 'gpu' or 'tpu'")
    try:
        return jax.devices(platform)[0]
    except RuntimeError:
        seen = sorted({d.platform for d in jax.devices()})
        raise BackendUnavailableError(
            f"device={device!r}: JAX sees no {platform.upper()} here (it has {seen})"
        ) from None


class JaxBackend:
    name = "jax"

    def __init__(self, generator, *, quantization: str | None, device, path: str):
        self.generator = generator
        self.quantization = quantization
        self.device = device
        self.path = path

    @classmethod
    def load(cls, path: str, hf_config: dict, *, quantization: str | None, device: str, store: Store) -> JaxBackend:
        jax = _jax()
        from reactor_core.formats import hf
        from reactor_core.generation.generate import Generator
        from reactor_core.models import quant

        if hf_config.get("quantization"):
            raise ModelNotAvailableError(
                f"{path} holds MLX-quantized weights, which the JAX backend cannot read; load it with "
                "backend='mlx', or pass the float directory and quantization='8bit'/'4bit'"
            )
        dev = _device(device)
        compute = "float32" if dev.platform == "cpu" else "bfloat16"
        params = _rough_params(hf_config)
        storage = "bfloat16" if params > _FLOAT32_LIMIT_PARAMS else compute
        with jax.default_device(dev):
            model, _ = hf.load_hf_dir(path, dtype=compute, param_dtype=storage)
            if quantization is not None:
                quant.quantize_model(model, bits=QUANT_BITS[quantization], group_size=GROUP_SIZE)
            generator = Generator(model)
        return cls(generator, quantization=quantization, device=dev, path=path)

    def tokens(self, prompt_ids: list[int], sampling: Sampling) -> Iterator[int]:
        """Yields generated token ids, one jitted step each; prefill happens on the first."""
        from reactor_core.generation.sampling import SamplingConfig

        seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "little")
        config = SamplingConfig(
            temperature=float(sampling.temperature),
            top_k=sampling.top_k,
            top_p=float(sampling.top_p),
            min_p=float(sampling.min_p),
            repetition_penalty=float(sampling.repetition_penalty),
            seed=seed,
        )
        # Stopping on EOS is the stream's decision: the generator runs to max_tokens.
        steps = self.generator.stream([prompt_ids], max_new_tokens=sampling.max_tokens, sampling=config, stop_ids=[])
        try:
            for step in steps:
                yield int(step[0])
        finally:
            steps.close()

    def score(self, ids: list[int]):
        """One forward pass over `ids`: (log p(ids[t+1] | ids[:t+1]), argmax prediction) per t, each (T-1,)."""
        import jax.numpy as jnp
        import numpy as np
        from reactor_core.generation.generate import bucket

        n = bucket(len(ids))
        tokens = np.zeros((1, n), np.int32)
        tokens[0, : len(ids)] = ids  # right padding: causal attention never looks ahead
        logprobs, argmax = _score(self.generator.graphdef, self.generator.state, jnp.asarray(tokens))
        return np.asarray(logprobs)[0, : len(ids) - 1], np.asarray(argmax)[0, : len(ids) - 1]


_SCORE = None


def _score(graphdef, state, tokens):
    global _SCORE
    if _SCORE is None:
        import jax
        from flax import nnx

        def score(graphdef, state, tokens):
            model = nnx.merge(graphdef, state)
            logits = model(tokens)  # (1, T, V)
            logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)  # (1, T-1, V)
            picked = jax.numpy.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # (1, T-1)
            return picked, jax.numpy.argmax(logp, axis=-1)

        _SCORE = jax.jit(score, static_argnums=0)
    return _SCORE(graphdef, state, tokens)


def _rough_params(hf_config: dict) -> int:
    h = hf_config.get("hidden_size", 0)
    return 12 * hf_config.get("num_hidden_layers", 0) * h * h + 2 * hf_config.get("vocab_size", 0) * h
