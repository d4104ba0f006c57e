"""Reading and writing example JSONL files, one example per line.

A bad line (not UTF-8, not JSON, wrong schema, empty content) raises DataError naming
the file, the line and the reason; with skip_bad_lines=True it is counted in DataStats
instead. A file mixing SFT formats with preference pairs is always an error.
"""

import json
import os

from reactor_core.data import schema
from reactor_core.data import stats as stats_lib


def read_jsonl(path, *, skip_bad_lines=False, stats=None):
    """Parses and validates a JSONL file.

    Args:
      path: the file.
      skip_bad_lines: count bad lines in `stats` instead of raising.
      stats: a DataStats to update (lines, formats, bad lines); one is made if None.

    Returns:
      list[schema.Record], in file order.

    Raises:
      DataError: a bad line (unless skipped), or a file mixing SFT and preference data.
      FileNotFoundError: no such file.
    """
    path = os.fspath(path)
    stats = stats if stats is not None else stats_lib.DataStats()
    with open(path, "rb") as f:
        raw = f.read()
    records = []
    first = None  # (format, line) of the first good line
    lines = raw.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            stats.blank_lines += 1
            continue
        stats.lines += 1
        try:
            record = parse_line(line, path=path, line=number)
        except schema.DataError as e:
            if not skip_bad_lines:
                raise
            stats.add_bad_line(path, number, e.reason)
            continue
        if first is None:
            first = (record.format, number)
        elif record.is_preference != (first[0] == "preference"):
            raise schema.DataError(
                f"file mixes SFT and preference examples: line {first[1]} is '{first[0]}' but this "
                f"line is '{record.format}'. Put SFT and preference data in separate files.",
                path=path,
                line=number,
            )
        stats.formats[record.format] += 1
        records.append(record)
    return records


def parse_line(content, *, path="", line=0):
    """Parses one line (bytes or str) into a Record; raises DataError with the location."""

    def error(reason):
        return schema.DataError(reason, path=path, line=line)

    if isinstance(content, bytes):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(
                f"not valid UTF-8 (byte {e.start}: {content[e.start : e.start + 1]!r})"
            ) from None
    else:
        text = content
    if line == 1:
        text = text.lstrip("\ufeff")  # a UTF-8 byte-order mark
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"invalid JSON: {e.msg} at column {e.colno}") from None
    try:
        fmt, example = schema.parse_example(obj)
    except schema.DataError as e:
        raise error(e.reason) from None
    return schema.Record(fmt, example, path, line)


def write_jsonl(path, objects):
    """Writes JSON objects, one per line (UTF-8, keys in insertion order)."""
    with open(path, "w", encoding="utf-8") as f:
        for obj in objects:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
