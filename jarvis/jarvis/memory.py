"""Durable memory: conversations, messages, settings and feedback in SQLite (WAL).

    memory = Memory.open(home)            # $JARVIS_HOME/jarvis.sqlite3
    conv = memory.create_conversation(model="prime-135m-chat-v1", system_prompt="...")
    memory.add_message(conv.id, "user", "Hello")

Every write is one transaction with `synchronous=FULL`: a process killed with SIGKILL in
the middle of an answer keeps every message that was added before, and SQLite's journal
rolls back the write that was in flight, so the file stays consistent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import sqlite3
import threading
import time

DB_NAME = "jarvis.sqlite3"
SCHEMA_VERSION = 1
ROLES = ("system", "user", "assistant")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    model TEXT,
    system_prompt TEXT,
    sampling TEXT NOT NULL DEFAULT '{}',
    reasoning INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    reasoning TEXT,
    reply_to INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    active INTEGER NOT NULL DEFAULT 1,
    system_prompt TEXT,
    model TEXT,
    sampling TEXT,
    prompt_tokens INTEGER,
    generated_tokens INTEGER,
    finish_reason TEXT,
    time_to_first_token REAL,
    tokens_per_second REAL,
    attachments TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE TABLE IF NOT EXISTS feedback (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    correction TEXT,
    created_at REAL NOT NULL
);
"""


class NotFoundError(KeyError):
    """No conversation or message with that id."""

    def __str__(self):
        return str(self.args[0]) if self.args else "not found"


@dataclasses.dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    model: str | None
    system_prompt: str | None
    sampling: str  # JSON of jarvis.sampling.Sampling
    reasoning: bool
    created_at: float
    updated_at: float
    message_count: int = 0


@dataclasses.dataclass(frozen=True)
class Message:
    id: int
    conversation_id: str
    role: str
    content: str
    created_at: float
    reasoning: str | None = None
    reply_to: int | None = None
    active: bool = True
    system_prompt: str | None = None
    model: str | None = None
    sampling: str | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    finish_reason: str | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    attachments: tuple[str, ...] = ()
    rating: int | None = None  # from the feedback table: 1 good, -1 bad
    correction: str | None = None

    def as_chat(self) -> dict:
        return {"role": self.role, "content": self.content}


_MESSAGE_FIELDS = [f.name for f in dataclasses.fields(Message) if f.name not in ("rating", "correction")]
_OPTIONAL_FIELDS = set(_MESSAGE_FIELDS) - {"id", "conversation_id", "role", "content", "created_at"}


def default_home() -> str:
    """$JARVIS_HOME, else $XDG_DATA_HOME/jarvis, else ~/.local/share/jarvis."""
    if os.environ.get("JARVIS_HOME"):
        return os.environ["JARVIS_HOME"]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "jarvis")


class Memory:
    """One SQLite connection shared by the threads of a process, serialised by a lock."""

    def __init__(self, path: str):
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise ValueError(f"Cannot create the data directory {parent}: {e}. Set JARVIS_HOME") from e
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._tx() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    @classmethod
    def open(cls, home: str | None = None) -> Memory:
        return cls(os.path.join(home or default_home(), DB_NAME))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _tx(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _Cursor(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- conversations ----

    def create_conversation(
        self,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        sampling: str = "{}",
        reasoning: bool = False,
        title: str = "",
    ) -> Conversation:
        now = time.time()
        with self._tx() as db:
            while True:
                cid = secrets.token_hex(6)
                if not db.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone():
                    break
            db.execute(
                "INSERT INTO conversations (id, title, model, system_prompt, sampling, reasoning, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, title, model, system_prompt, sampling, int(reasoning), now, now),
            )
        return self.conversation(cid)

    def conversation(self, id_or_prefix: str) -> Conversation:
        """The conversation with this id, or the only one whose id starts with it."""
        key = (id_or_prefix or "").strip()
        rows = self._query(_CONVERSATION_SELECT + " WHERE c.id = ? GROUP BY c.id", (key,))
        if not rows and len(key) >= 3:
            pattern = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self._query(
                _CONVERSATION_SELECT + " WHERE c.id LIKE ? ESCAPE '\\' GROUP BY c.id LIMIT 2", (pattern,)
            )
            if len(rows) > 1:
                raise NotFoundError(f"Conversation id {key!r} is ambiguous: type more of it (see /history)")
        if not rows:
            raise NotFoundError(f"No conversation {key!r} in {self.path} (see /history for the ids)")
        return _conversation(rows[0])

    def conversations(self, limit: int = 50) -> list[Conversation]:
        """Most recently updated first."""
        rows = self._query(
            _CONVERSATION_SELECT + " GROUP BY c.id ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ?", (limit,)
        )
        return [_conversation(r) for r in rows]

    def update_conversation(self, conversation_id: str, **fields) -> Conversation:
        allowed = {"title", "model", "system_prompt", "sampling", "reasoning"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"update_conversation: unknown fields {sorted(bad)}; allowed: {sorted(allowed)}")
        if "reasoning" in fields:
            fields["reasoning"] = int(bool(fields["reasoning"]))
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE conversations SET {sets}, updated_at = ? WHERE id = ?",
                (*fields.values(), time.time(), conversation_id),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"No conversation {conversation_id!r}")
        return self.conversation(conversation_id)

    def delete_conversation(self, conversation_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ---- messages ----

    def add_message(self, conversation_id: str, role: str, content: str, **fields) -> Message:
        """Appends one message in one transaction; a first user message titles the conversation."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise TypeError(f"content must be a string, got {type(content).__name__}")
        bad = set(fields) - _OPTIONAL_FIELDS
        if bad:
            raise ValueError(f"add_message: unknown fields {sorted(bad)}")
        if "attachments" in fields:
            fields["attachments"] = json.dumps(list(fields["attachments"] or ()))
        if "active" in fields:
            fields["active"] = int(bool(fields["active"]))
        now = time.time()
        columns = ["conversation_id", "role", "content", "created_at", *fields]
        with self._tx() as db:
            conv = db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if conv is None:
                raise NotFoundError(f"No conversation {conversation_id!r}")
            cur = db.execute(
                f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                (conversation_id, role, content, now, *fields.values()),
            )
            if role == "user" and not conv["title"]:
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ?", (_title(content), conversation_id)
                )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            mid = cur.lastrowid
        return self.message(mid)

    def message(self, message_id: int) -> Message:
        rows = self._query(_MESSAGE_SELECT + " WHERE m.id = ?", (message_id,))
        if not rows:
            raise NotFoundError(f"No message {message_id}")
        return _message(rows[0])

    def messages(self, conversation_id: str, *, include_inactive: bool = False) -> list[Message]:
        """The conversation in order; superseded answers (retried) only when asked for."""
        where = " WHERE m.conversation_id = ?" + ("" if include_inactive else " AND m.active = 1")
        return [
            _message(r) for r in self._query(_MESSAGE_SELECT + where + " ORDER BY m.id", (conversation_id,))
        ]

    def supersede(self, message_id: int) -> None:
        """Takes an answer out of the conversation (a retry replaces it); it stays for export."""
        with self._tx() as db:
            db.execute("UPDATE messages SET active = 0 WHERE id = ?", (message_id,))

    def rate(self, message_id: int, rating: int, correction: str | None = None) -> Message:
        """Feedback on an assistant message: 1 good, -1 bad (optionally with a better answer)."""
        if rating not in (1, -1):
            raise ValueError(f"rating must be 1 (good) or -1 (bad), got {rating!r}")
        with self._tx() as db:
            row = db.execute("SELECT role FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"No message {message_id}")
            if row["role"] != "assistant":
                raise ValueError(
                    f"Only answers can be rated; message {message_id} is a {row['role']} message"
                )
            db.execute(
                "INSERT INTO feedback (message_id, rating, correction, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (message_id) DO UPDATE SET rating = excluded.rating, "
                "correction = excluded.correction, created_at = excluded.created_at",
                (message_id, rating, correction, time.time()),
            )
        return self.message(message_id)

    def rated_answers(self) -> list[Message]:
        """Every rated assistant message, oldest first (superseded ones included)."""
        return [
            _message(r) for r in self._query(_MESSAGE_SELECT + " WHERE f.rating IS NOT NULL ORDER BY m.id")
        ]

    def check(self) -> list[str]:
        """Problems SQLite finds in the file and its foreign keys; empty when consistent."""
        problems = [r[0] for r in self._query("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in self._query("PRAGMA foreign_key_check")]
        return problems


class _Cursor:
    """The connection inside a transaction (only `execute`)."""

    def __init__(self, db):
        self._db = db

    def execute(self, sql, args=()):
        return self._db.execute(sql, args)


_CONVERSATION_SELECT = (
    "SELECT c.*, COUNT(m.id) AS message_count FROM conversations c "
    "LEFT JOIN messages m ON m.conversation_id = c.id AND m.active = 1"
)
_MESSAGE_SELECT = (
    "SELECT m.*, f.rating AS rating, f.correction AS correction FROM messages m "
    "LEFT JOIN feedback f ON f.message_id = m.id"
)


def _conversation(row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        sampling=row["sampling"],
        reasoning=bool(row["reasoning"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
    )


def _message(row) -> Message:
    data = {k: row[k] for k in _MESSAGE_FIELDS}
    data["active"] = bool(data["active"])
    data["attachments"] = tuple(json.loads(data["attachments"])) if data["attachments"] else ()
    return Message(**data, rating=row["rating"], correction=row["correction"])


def _title(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= 60 else line[:57] + "..."
