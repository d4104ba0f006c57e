"""Jarvis Prime: the PRIME model catalogue and `PrimeModel`, on MLX or JAX.

    from jarvis_prime import PrimeModel
    model = PrimeModel.from_pretrained("prime-7b-chat-v1", quantization="8bit")
    response = model.generate("What is machine learning?")
"""

from jarvis_prime.catalogue import ModelInfo, list_models
from jarvis_prime.errors import (
    BackendUnavailableError,
    ModelNotAvailableError,
    PrimeError,
    QuantizationError,
    UnknownModelError,
)
from jarvis_prime.model import PrimeModel
from jarvis_prime.sources import PrimeWarning
from jarvis_prime.stream import GenerationResult, TextStream

__version__ = "0.6.0"

__all__ = [
    "BackendUnavailableError",
    "GenerationResult",
    "ModelInfo",
    "ModelNotAvailableError",
    "PrimeError",
    "PrimeModel",
    "PrimeWarning",
    "QuantizationError",
    "TextStream",
    "UnknownModelError",
    "list_models",
]
