"""Run: bazel test //jarvis:memory_test"""

import sqlite3
import sys
import threading

import pytest

from jarvis.memory import Memory, NotFoundError
from jarvis.sampling import Sampling


@pytest.fixture
def memory(tmp_path):
    with Memory.open(str(tmp_path)) as m:
        yield m


def test_wal_and_durable_settings(memory):
    db = sqlite3.connect(memory.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert memory._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert memory._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_conversation_round_trip(memory):
    sampling = Sampling(temperature=0.2, seed=7)
    conv = memory.create_conversation(
        model="prime-135m-chat-v1", system_prompt="be brief", sampling=sampling.to_json()
    )
    user = memory.add_message(conv.id, "user", "What is   the capital\nof France?")
    answer = memory.add_message(
        conv.id,
        "assistant",
        "Paris.",
        reply_to=user.id,
        model="prime-135m-chat-v1",
        sampling=sampling.to_json(),
        prompt_tokens=20,
        generated_tokens=3,
        finish_reason="stop",
        reasoning="easy",
    )
    again = memory.conversation(conv.id[:6])
    assert again.title == "What is the capital of France?"
    assert again.message_count == 2 and Sampling.from_json(again.sampling) == sampling
    assert [m.content for m in memory.messages(conv.id)] == ["What is   the capital\nof France?", "Paris."]
    assert memory.message(answer.id).reasoning == "easy"
    assert memory.conversations()[0].id == conv.id


def test_lookup_errors(memory):
    with pytest.raises(NotFoundError, match="No conversation"):
        memory.conversation("nope")
    db = sqlite3.connect(memory.path)
    with db:
        for cid in ("abc111", "abc222"):
            db.execute("INSERT INTO conversations (id, created_at, updated_at) VALUES (?, 0, 0)", (cid,))
    db.close()
    with pytest.raises(NotFoundError, match="ambiguous"):
        memory.conversation("abc")
    assert memory.conversation("abc2").id == "abc222"
    with pytest.raises(NotFoundError):  # too short to be a prefix
        memory.conversation("a")


def test_feedback_and_supersede(memory):
    conv = memory.create_conversation()
    user = memory.add_message(conv.id, "user", "hi")
    first = memory.add_message(conv.id, "assistant", "yo", reply_to=user.id)
    with pytest.raises(ValueError, match="Only answers"):
        memory.rate(user.id, 1)
    with pytest.raises(ValueError, match="rating"):
        memory.rate(first.id, 0)
    memory.rate(first.id, -1, "Hello! How can I help?")
    memory.supersede(first.id)
    second = memory.add_message(conv.id, "assistant", "Hello!", reply_to=user.id)
    memory.rate(second.id, 1)
    assert [m.id for m in memory.messages(conv.id)] == [user.id, second.id]
    assert len(memory.messages(conv.id, include_inactive=True)) == 3
    rated = memory.rated_answers()
    assert [(m.id, m.rating) for m in rated] == [(first.id, -1), (second.id, 1)]
    assert rated[0].correction == "Hello! How can I help?"


def test_bad_input(memory):
    conv = memory.create_conversation()
    with pytest.raises(ValueError, match="role"):
        memory.add_message(conv.id, "robot", "x")
    with pytest.raises(NotFoundError):
        memory.add_message("missing", "user", "x")
    with pytest.raises(ValueError, match="unknown fields"):
        memory.update_conversation(conv.id, colour="red")


def test_threads_share_one_memory(memory):
    conv = memory.create_conversation()

    def write(k):
        for i in range(25):
            memory.add_message(conv.id, "user", f"{k}-{i}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(memory.messages(conv.id)) == 100
    assert memory.check() == []


def test_delete_cascades(memory):
    conv = memory.create_conversation()
    user = memory.add_message(conv.id, "user", "hi")
    answer = memory.add_message(conv.id, "assistant", "yo", reply_to=user.id)
    memory.rate(answer.id, 1)
    memory.delete_conversation(conv.id)
    assert memory.rated_answers() == [] and memory.conversations() == []
    assert memory.check() == []


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
