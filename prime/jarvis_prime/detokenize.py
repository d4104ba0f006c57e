"""Streaming detokenization that never emits half a character.

Byte-level BPE (SmolLM2, Llama 3) and SentencePiece byte fallback (Llama 2) split one
character over several tokens; decoding them one at a time would print U+FFFD. The
detokenizer decodes a short window of recent tokens twice (without and with the new
token) and emits only the difference, and only once it no longer ends in U+FFFD:

    detok = Detokenizer(tokenizer)
    for token in tokens:
        print(detok.add(token), end="")
    print(detok.flush())

The concatenated pieces equal `tokenizer.decode(tokens, skip_special_tokens=True)`.
"""

from __future__ import annotations

_REPLACEMENT = "\ufffd"
# A window this long without a complete character is not a partial UTF-8 sequence
# (at most 4 bytes) but a genuinely undecodable run: emit it rather than hold it forever.
_MAX_PENDING = 8


class Detokenizer:
    """Incremental decoding of generated token ids with a Hugging Face tokenizer."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.tokens: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens before this index have been emitted

    def _decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Consumes one token; returns the newly completed text (may be "")."""
        self.tokens.append(int(token))
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        if len(after) > len(before) and (
            not after.endswith(_REPLACEMENT) or len(self.tokens) - self._read >= _MAX_PENDING
        ):
            self._prefix, self._read = self._read, len(self.tokens)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """The text still held back (an unfinished sequence at the end decodes as U+FFFD)."""
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        self._prefix = self._read = len(self.tokens)
        return after[len(before) :]
