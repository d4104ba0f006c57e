"""Stop strings over streamed text: hold back what might be the start of a stop string.

stops = StopMatcher(["\\nUser:"])
piece, stopped = stops.feed("Hello\\nUs")   # -> ("Hello", False); "\\nUs" is held
piece, stopped = stops.feed("er: hi")       # -> ("", True); text ends before the stop
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stop: list[str] | tuple[str, ...] | None):
        self.stop = tuple(s for s in (stop or ()) if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was reached)."""
        if not self.stop:
            return text, False
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        hold = 0
        for s in self.stop:  # longest suffix of buf that is a proper prefix of a stop string
            for n in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:n]):
                    hold = n
                    break
        self._pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
