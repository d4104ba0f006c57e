"""Fits a conversation into the model's context window by dropping the oldest turns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


class ContextOverflowError(ValueError):
    """Even the system prompt plus the newest message do not fit the window."""


@dataclasses.dataclass(frozen=True)
class Fitted:
    messages: list[dict]
    dropped: int  # history messages left out
    prompt_tokens: int

    def notice(self, model: str, window: int) -> str | None:
        if not self.dropped:
            return None
        return (
            f"context: left out the {self.dropped} oldest message(s) to fit {model}'s {window}-token window"
        )


def fit(
    messages: list[dict], count_tokens: Callable[[list[dict]], int], *, window: int, reserve: int
) -> Fitted:
    """Keeps a leading system message and the newest messages whose tokens plus `reserve`
    (the answer's budget) fit `window`. Messages drop from the front, a user/assistant
    pair at a time, so the kept history still starts with a user turn."""
    budget = window - reserve
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :]
    dropped = 0
    while True:
        candidate = system + rest
        tokens = count_tokens(candidate)
        if tokens <= budget:
            return Fitted(candidate, dropped, tokens)
        if len(rest) <= 1:
            raise ContextOverflowError(
                f"The message needs {tokens} tokens but only {max(budget, 0)} fit: the window is "
                f"{window} tokens and {reserve} are reserved for the answer. Shorten the message "
                "or the system prompt, or lower max_tokens."
            )
        cut = 1
        while cut < len(rest) - 1 and rest[cut]["role"] != "user":
            cut += 1
        rest = rest[cut:]
        dropped += cut
