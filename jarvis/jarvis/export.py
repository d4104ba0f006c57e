"""Export stored conversations as JSONL that Reactor trains on: the loop back into training.

Run it:  bazel run //jarvis:assistant -- export --format=preference --output=prefs.jsonl

  messages    {"messages": [{"role", "content"}, ...]}: one line per conversation, for SFT.
              An answer rated bad is replaced by the user's better answer (/bad TEXT), or
              the conversation is cut before it; so do unrated answers that were stopped
              or cut off at max_tokens.
  preference  {"prompt": [messages...], "chosen": str, "rejected": str}, for DPO: answers to
              the same prompt (a /retry, or the same question in another conversation)
              rated good and bad make a pair, and so does a bad answer with its correction.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import tempfile

from jarvis.memory import Memory, Message

FORMATS = ("messages", "preference")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    format: str = "messages"
    output: str = "jarvis_export.jsonl"
    overwrite: bool = False
    rated_only: bool = False  # messages: only conversations with an answer rated good

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"ExportConfig.format must be one of {FORMATS}, got {self.format!r}")


def export(memory: Memory, config: ExportConfig) -> int:
    """Writes the JSONL file atomically; returns the number of lines."""
    if os.path.exists(config.output) and not config.overwrite:
        raise ValueError(f"Cannot write {config.output}: it exists. Delete it, or pass --overwrite")
    rows = (
        messages_rows(memory, rated_only=config.rated_only)
        if config.format == "messages"
        else preference_rows(memory)
    )
    directory = os.path.dirname(os.path.abspath(config.output))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".jarvis-export-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, config.output)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(rows)


def messages_rows(memory: Memory, *, rated_only: bool = False) -> list[dict]:
    rows = []
    for conv in reversed(memory.conversations(limit=1_000_000)):
        messages = memory.messages(conv.id)
        if rated_only and not any(m.rating == 1 for m in messages):
            continue
        out = []
        system = next((m.system_prompt for m in messages if m.role == "assistant" and m.system_prompt), None)
        if system:
            out.append({"role": "system", "content": system})
        for i, m in enumerate(messages):
            if m.role == "user":
                reply = (
                    messages[i + 1] if i + 1 < len(messages) and messages[i + 1].role == "assistant" else None
                )
                text = _trainable_answer(reply) if reply else None
                if text is None:
                    break  # no usable answer: the conversation ends before this question
                if m.content.strip():
                    out += [{"role": "user", "content": m.content}, {"role": "assistant", "content": text}]
        if any(m["role"] == "assistant" for m in out):
            rows.append({"messages": out})
    return rows


def _trainable_answer(m: Message) -> str | None:
    """The text to train on for this answer, or None: a bad answer counts only through its
    correction, and an unrated one only if it ended by itself (not stopped or cut off)."""
    if m.rating == -1:
        return m.correction if m.correction and m.correction.strip() else None
    if not m.content.strip():
        return None
    if m.rating is None and m.finish_reason in ("cancelled", "length"):
        return None
    return m.content


def preference_rows(memory: Memory) -> list[dict]:
    groups: dict[str, dict] = collections.OrderedDict()
    for answer in memory.rated_answers():
        prompt = _prompt_of(memory, answer)
        if prompt is None:
            continue
        key = json.dumps(prompt, sort_keys=True)
        group = groups.setdefault(key, {"prompt": prompt, "chosen": [], "rejected": []})
        if answer.rating == 1 and answer.content.strip():
            group["chosen"].append(answer.content)
        if answer.rating == -1:
            if answer.content.strip():
                group["rejected"].append(answer.content)
            if answer.correction and answer.correction.strip():
                group["chosen"].append(answer.correction)
    rows = []
    for group in groups.values():
        for chosen in dict.fromkeys(group["chosen"]):
            for rejected in dict.fromkeys(group["rejected"]):
                if chosen != rejected:
                    rows.append({"prompt": group["prompt"], "chosen": chosen, "rejected": rejected})
    return rows


def _prompt_of(memory: Memory, answer: Message) -> list[dict] | None:
    """The messages the answer replied to: its system prompt, the history, the question."""
    if answer.reply_to is None:
        return None
    before = [m for m in memory.messages(answer.conversation_id) if m.id <= answer.reply_to]
    if not before or before[-1].id != answer.reply_to:
        return None
    prompt = [{"role": "system", "content": answer.system_prompt}] if answer.system_prompt else []
    prompt += [m.as_chat() for m in before if m.role in ("user", "assistant") and m.content.strip()]
    return prompt if prompt and prompt[-1]["role"] == "user" else None
