"""Jarvis Prime: the PRIME model catalogue and `PrimeModel`, on MLX or JAX.

    from jarvis_prime import PrimeModel
    model = PrimeModel.from_pretrained("prime-7b-chat-v1", quantization="8bit")
    response = model.generate("What is machine learning?")

Names are imported on first use, so `import jarvis_prime.catalogue` stays light and each
Bazel target's dependencies are exactly what its modules import.
"""

import importlib

__version__ = "0.6.0"

_EXPORTS = {
    "PrimeModel": "jarvis_prime.model",
    "list_models": "jarvis_prime.catalogue",
    "ModelInfo": "jarvis_prime.catalogue",
    "GenerationResult": "jarvis_prime.stream",
    "TextStream": "jarvis_prime.stream",
    "PrimeWarning": "jarvis_prime.sources",
    "PrimeError": "jarvis_prime.errors",
    "UnknownModelError": "jarvis_prime.errors",
    "ModelNotAvailableError": "jarvis_prime.errors",
    "BackendUnavailableError": "jarvis_prime.errors",
    "QuantizationError": "jarvis_prime.errors",
    "Sampling": "jarvis_prime.sampling",
}

__all__ = [
    "BackendUnavailableError",
    "GenerationResult",
    "ModelInfo",
    "ModelNotAvailableError",
    "PrimeError",
    "PrimeModel",
    "PrimeWarning",
    "QuantizationError",
    "Sampling",
    "TextStream",
    "UnknownModelError",
    "list_models",
]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jarvis_prime' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
