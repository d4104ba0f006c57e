"""JAX backend: reactor's Flax NNX Llama driven by Prime's generation engine (`engine.py`).

Loading compiles the engine's fixed program set (or reads it from the persistent compilation
cache under the store, `compile_cache.py`), so no request ever waits for a compile.

Quantization on load is reactor's weight-only int8 / int4 (`reactor_core.models.quant`):
integer weights in memory, dequantized inside the jitted step right before each matmul.
Float weights compute in float32 on CPU and bfloat16 on accelerators.
"""

from __future__ import annotations

from collections.abc import Iterator

from jarvis_prime import compile_cache
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

    def __init__(self, engine, model, *, quantization: str | None, device, path: str, warm_up_s: float):
        self.engine = engine  # jarvis_prime.engine.GenerationEngine
        self.model = model
        self.quantization = quantization
        self.device = device
        self.path = path
        self.warm_up_s = warm_up_s  # load-time compilation (or persistent-cache reads)

    @property
    def context_length(self) -> int:
        return self.engine.capacity

    @classmethod
    def load(
        cls, path: str, hf_config: dict, *, quantization: str | None, device: str, store: Store, slots: int | None = None
    ) -> JaxBackend:
        jax = _jax()
        from reactor_core.formats import hf
        from reactor_core.models import quant

        from jarvis_prime.engine import EngineConfig, GenerationEngine

        if hf_config.get("quantization"):
            raise ModelNotAvailableError(
                f"{path} holds MLX-quantized weights, which the JAX backend cannot read; load it with "
                "backend='mlx', or pass the float directory and quantization='8bit'/'4bit'"
            )
        dev = _device(device)
        compile_cache.enable(store)
        compute = "float32" if dev.platform == "cpu" else "bfloat16"
        params = _rough_params(hf_config)
        storage = "bfloat16" if params > _FLOAT32_LIMIT_PARAMS else compute
        with jax.default_device(dev):
            model, _ = hf.load_hf_dir(path, dtype=compute, param_dtype=storage)
            if quantization is not None:
                quant.quantize_model(model, bits=QUANT_BITS[quantization], group_size=GROUP_SIZE)
            engine_config = EngineConfig() if slots is None else EngineConfig(slots=slots)
            engine = GenerationEngine(
                model, engine_config, context_length=hf_config.get("max_position_embeddings"), device=dev
            )
            seconds = engine.warm_up()
        return cls(engine, model, quantization=quantization, device=dev, path=path, warm_up_s=seconds)

    def tokens(self, prompt_ids: list[int], sampling: Sampling, stop_ids=frozenset()) -> Iterator[int]:
        """Yields generated token ids as the engine produces them; prefill happens before the first."""
        from jarvis_prime.engine import random_seed

        seed = sampling.seed if sampling.seed is not None else random_seed()
        request = self.engine.submit(
            prompt_ids, sampling, stop_ids=stop_ids, max_tokens=sampling.max_tokens, seed=seed
        )
        try:
            yield from request
        finally:
            request.cancel()

    def score(self, ids: list[int]):
        """One forward pass over `ids`: (log p(ids[t+1] | ids[:t+1]), argmax prediction) per t, each (T-1,)."""
        import jax.numpy as jnp
        import numpy as np
        from reactor_core.generation.generate import bucket

        n = bucket(len(ids))
        tokens = np.zeros((1, n), np.int32)
        tokens[0, : len(ids)] = ids  # right padding: causal attention never looks ahead
        logprobs, argmax = _score(self.engine.graphdef, self.engine.state, jnp.asarray(tokens))
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
