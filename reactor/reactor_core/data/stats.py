"""DataStats: what reading, tokenizing and packing kept, changed and left out.

Nothing is dropped silently: every skipped line or example is counted here, and the
first bad lines are kept with file, line number and reason.
"""

import collections
import dataclasses
import logging

MAX_BAD_LINE_SAMPLES = 100


@dataclasses.dataclass
class BadLine:
    path: str
    line: int
    reason: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.reason}"


@dataclasses.dataclass
class DataStats:
    lines: int = 0  # non-blank lines read
    blank_lines: int = 0
    formats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    bad_lines: int = 0
    bad_line_samples: list = dataclasses.field(default_factory=list)  # first BadLines
    held_out: int = 0  # records that went to the other split (train/eval)
    examples: int = 0  # tokenized examples kept
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_targets: int = 0  # no trained token left (e.g. the response was truncated away)
    tokens: int = 0
    target_tokens: int = 0

    def add_bad_line(self, path, line, reason):
        self.bad_lines += 1
        if len(self.bad_line_samples) < MAX_BAD_LINE_SAMPLES:
            self.bad_line_samples.append(BadLine(str(path), line, reason))

    def to_dict(self):
        """A JSON-able summary."""
        d = dataclasses.asdict(self)
        d["formats"] = dict(self.formats)
        d["bad_line_samples"] = [str(b) for b in self.bad_line_samples]
        return d

    def report(self):
        """A few human-readable lines."""
        fmts = ", ".join(f"{k}={v}" for k, v in sorted(self.formats.items())) or "none"
        out = [
            f"lines: {self.lines} (formats: {fmts}; "
            f"blank: {self.blank_lines}; bad: {self.bad_lines})"
        ]
        if self.examples or self.tokens:
            out.append(
                f"examples: {self.examples}, tokens: {self.tokens}, "
                f"target tokens: {self.target_tokens}, "
                f"truncated: {self.truncated}, dropped overlong: {self.dropped_overlong}, "
                f"dropped without targets: {self.dropped_no_targets}, held out: {self.held_out}"
            )
        out.extend(f"  bad line {b}" for b in self.bad_line_samples)
        if self.bad_lines > len(self.bad_line_samples):
            out.append(f"  ... and {self.bad_lines - len(self.bad_line_samples)} more bad lines")
        return "\n".join(out)

    def log_summary(self, logger=None):
        """Logs the report; a warning when anything was skipped or dropped."""
        logger = logger or logging.getLogger("reactor_core.data")
        lost = self.bad_lines + self.dropped_overlong + self.dropped_no_targets
        (logger.warning if lost else logger.info)("data: %s", self.report())
