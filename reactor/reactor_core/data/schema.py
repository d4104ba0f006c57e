"""The four JSONL example formats, their validation, and their normalised JSON form.

  text        {"text": str}
  messages    {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  alpaca      {"instruction": str, "input": str (optional), "output": str}
  preference  {"prompt": str | messages, "chosen": str | [assistant message],
               "rejected": str | [assistant message]}

Alpaca rows become a user/assistant conversation. Keys outside a format are ignored.
"""

import dataclasses

ROLES = ("system", "user", "assistant")
SFT_FORMATS = ("text", "messages", "alpaca")
FORMATS = SFT_FORMATS + ("preference",)

_EXPECTED = (
    '{"text"}, {"messages": [{"role", "content"}]}, {"instruction", "input", "output"} '
    'or {"prompt", "chosen", "rejected"}'
)


class DataError(ValueError):
    """A bad example or data file. `path` and `line` (1-based) locate it when known."""

    def __init__(self, reason, *, path=None, line=None):
        self.reason = reason
        self.path = path
        self.line = line
        where = (
            f"{path}:{line}: "
            if path is not None and line is not None
            else f"{path}: "
            if path
            else ""
        )
        super().__init__(where + reason)


@dataclasses.dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclasses.dataclass(frozen=True)
class TextExample:
    text: str


@dataclasses.dataclass(frozen=True)
class ChatExample:
    messages: tuple  # tuple[Message, ...]


@dataclasses.dataclass(frozen=True)
class PreferenceExample:
    prompt: tuple  # tuple[Message, ...], ends with a user turn
    chosen: str
    rejected: str


@dataclasses.dataclass(frozen=True)
class Record:
    """One parsed example and where it came from."""

    format: str  # one of FORMATS
    example: object  # TextExample | ChatExample | PreferenceExample
    path: str = ""
    line: int = 0

    @property
    def is_preference(self):
        return self.format == "preference"


def detect_format(obj):
    """Returns the format name of a decoded JSON line, or raises DataError."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    found = []
    if "text" in obj:
        found.append("text")
    if "messages" in obj:
        found.append("messages")
    if "instruction" in obj or "output" in obj:
        found.append("alpaca")
    if "chosen" in obj or "rejected" in obj:
        found.append("preference")
    if not found:
        raise DataError(f"unknown format: keys {sorted(obj)}; expected {_EXPECTED}")
    if len(found) > 1:
        raise DataError(
            f"ambiguous format: keys {sorted(obj)} match {found}; keep one format per line"
        )
    return found[0]


def parse_example(obj):
    """Validates a decoded JSON line; returns (format, example) or raises DataError."""
    fmt = detect_format(obj)
    if fmt == "text":
        return fmt, TextExample(_text(obj, "text"))
    if fmt == "messages":
        messages = _messages(obj["messages"], "messages")
        if not any(m.role == "assistant" for m in messages):
            raise DataError("messages has no assistant turn: nothing to train on")
        return fmt, ChatExample(messages)
    if fmt == "alpaca":
        instruction = _text(obj, "instruction")
        output = _text(obj, "output")
        extra = obj.get("input", "")
        if not isinstance(extra, str):
            raise DataError(f"'input' must be a string, got {type(extra).__name__}")
        user = instruction + ("\n\n" + extra if extra.strip() else "")
        return fmt, ChatExample((Message("user", user), Message("assistant", output)))
    return fmt, _preference(obj)


def to_json(record):
    """The normalised JSON object of a record (alpaca becomes messages)."""
    ex = record.example
    if isinstance(ex, TextExample):
        return {"text": ex.text}
    if isinstance(ex, ChatExample):
        return {"messages": messages_to_json(ex.messages)}
    return {"prompt": messages_to_json(ex.prompt), "chosen": ex.chosen, "rejected": ex.rejected}


def messages_to_json(messages):
    return [{"role": m.role, "content": m.content} for m in messages]


def _text(obj, key):
    if key not in obj:
        raise DataError(f"missing key '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"'{key}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"'{key}' is empty")
    return value


def _messages(value, key):
    if not isinstance(value, list):
        raise DataError(f"'{key}' must be a list of messages, got {type(value).__name__}")
    if not value:
        raise DataError(f"'{key}' is an empty list")
    out = []
    for i, m in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise DataError(
                f"{where} must be an object with 'role' and 'content', got {type(m).__name__}"
            )
        role = m.get("role")
        if role not in ROLES:
            raise DataError(f"{where}.role must be one of {ROLES}, got {role!r}")
        if role == "system" and i != 0:
            raise DataError(f"{where}: a system message may only come first")
        content = m.get("content")
        if not isinstance(content, str):
            raise DataError(f"{where}.content must be a string, got {type(content).__name__}")
        if not content.strip():
            raise DataError(f"{where}.content is empty")
        out.append(Message(role, content))
    return tuple(out)


def _preference(obj):
    for key in ("prompt", "chosen", "rejected"):
        if key not in obj:
            raise DataError(f"preference example is missing key '{key}'")
    if isinstance(obj["prompt"], str):
        prompt = (Message("user", _text(obj, "prompt")),)
    else:
        prompt = _messages(obj["prompt"], "prompt")
        if prompt[-1].role != "user":
            raise DataError(f"'prompt' must end with a user message, ends with {prompt[-1].role!r}")
    chosen = _response(obj, "chosen")
    rejected = _response(obj, "rejected")
    if chosen == rejected:
        raise DataError("'chosen' and 'rejected' are identical: the pair carries no preference")
    return PreferenceExample(prompt, chosen, rejected)


def _response(obj, key):
    value = obj[key]
    if isinstance(value, str):
        return _text(obj, key)
    if isinstance(value, list):
        messages = _messages(value, key)
        if len(messages) != 1 or messages[0].role != "assistant":
            raise DataError(f"'{key}' must be a string or a list of exactly one assistant message")
        return messages[0].content
    raise DataError(
        f"'{key}' must be a string or a list of one assistant message, got {type(value).__name__}"
    )
