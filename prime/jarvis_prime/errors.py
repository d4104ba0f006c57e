"""Prime's exceptions: one base class, so callers can catch everything Prime raises.

Every error is a `ValueError` carrying a message that says what was wrong and what to do;
library exceptions from deep inside a backend are translated at the boundary (model.py).
"""

from __future__ import annotations


class PrimeError(ValueError):
    """Base of every error Prime raises on bad input, missing weights or an unusable machine."""


class UnknownModelError(PrimeError):
    """A name that is neither a catalogue entry nor an existing path."""

    def __init__(self, message: str, *, suggestions: tuple[str, ...] = ()):
        super().__init__(message)
        self.suggestions = suggestions


class ModelNotAvailableError(PrimeError):
    """A known model whose weights cannot be found, fetched or read (e.g. a corrupt directory)."""


class BackendUnavailableError(PrimeError):
    """The requested backend or device does not exist on this machine."""


class QuantizationError(PrimeError):
    """An unsupported quantization, or one the chosen backend cannot apply."""
