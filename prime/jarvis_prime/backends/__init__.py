"""Backends turn prompt token ids into generated token ids, one step per `next()`.

    backend = load("jax", path, hf_config, quantization="8bit", device="auto", store=store)
    for token in backend.tokens(prompt_ids, Sampling(max_tokens=16)):
        ...

"auto" picks MLX on Apple Silicon (when mlx-lm is installed) and JAX everywhere else.
"""

from __future__ import annotations

from jarvis_prime.catalogue import Machine
from jarvis_prime.errors import BackendUnavailableError

BACKENDS = ("auto", "jax", "mlx")


def choose(backend: str, machine: Machine | None = None) -> str:
    """Resolves "auto" and checks the backend's packages import; BackendUnavailableError if not."""
    from jarvis_prime.backends import jax_backend, mlx_backend

    if backend not in BACKENDS:
        raise BackendUnavailableError(f"Unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        machine = machine or Machine.detect()
        return "mlx" if machine.apple_silicon and mlx_backend.available() else "jax"
    module = {"jax": jax_backend, "mlx": mlx_backend}[backend]
    if not module.available():
        module._jax() if backend == "jax" else module._mlx()  # raises the install hint
    return backend


def load(backend: str, path: str, hf_config: dict, *, quantization, device: str, store, slots=None):
    if backend == "mlx":
        from jarvis_prime.backends.mlx_backend import MLXBackend

        return MLXBackend.load(path, hf_config, quantization=quantization, device=device, store=store)
    from jarvis_prime.backends.jax_backend import JaxBackend

    return JaxBackend.load(
        path, hf_config, quantization=quantization, device=device, store=store, slots=slots
    )
