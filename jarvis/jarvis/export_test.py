"""Run: bazel test //jarvis:export_test"""

import json
import sys

import pytest

from jarvis.export import ExportConfig, export, messages_rows, preference_rows
from jarvis.memory import Memory

SYSTEM = "You are Jarvis."


def _answer(memory, conv, user, text, **kw):
    return memory.add_message(
        conv.id, "assistant", text, reply_to=user.id, system_prompt=SYSTEM, finish_reason="stop", **kw
    )


@pytest.fixture
def memory(tmp_path):
    with Memory.open(str(tmp_path / "home")) as m:
        # 1: two good turns
        c1 = m.create_conversation()
        u = m.add_message(c1.id, "user", "What is 2+2?")
        m.rate(_answer(m, c1, u, "4.").id, 1)
        u = m.add_message(c1.id, "user", "And 3+3?")
        _answer(m, c1, u, "6.")
        # 2: a bad answer, retried, the retry rated good
        c2 = m.create_conversation()
        u = m.add_message(c2.id, "user", "Capital of France?")
        bad = _answer(m, c2, u, "Berlin.")
        m.rate(bad.id, -1)
        m.supersede(bad.id)
        m.rate(_answer(m, c2, u, "Paris.").id, 1)
        # 3: a bad answer with a correction, then a stopped answer
        c3 = m.create_conversation()
        u = m.add_message(c3.id, "user", "Say hi")
        m.rate(_answer(m, c3, u, "Goodbye.").id, -1, "Hi!")
        u = m.add_message(c3.id, "user", "Tell a story")
        m.add_message(c3.id, "assistant", "Once upon", reply_to=u.id, finish_reason="cancelled")
        # 6: an answer cut off at max_tokens: not trained on unless rated good
        c6 = m.create_conversation()
        u = m.add_message(c6.id, "user", "Write an essay")
        m.add_message(c6.id, "assistant", "Essays are", reply_to=u.id, finish_reason="length")
        # 4: the same question as in 2 elsewhere, rated bad: pairs with 2's good answer
        c4 = m.create_conversation()
        u = m.add_message(c4.id, "user", "Capital of France?")
        m.rate(_answer(m, c4, u, "Lyon.").id, -1)
        # 5: nothing answered
        c5 = m.create_conversation()
        m.add_message(c5.id, "user", "hello?")
        yield m


def _valid_messages(messages):  # Reactor's rules (reactor_core.data.schema)
    assert messages and all(
        m["role"] in ("system", "user", "assistant") and m["content"].strip() for m in messages
    )
    assert all(m["role"] != "system" for m in messages[1:])


def test_messages_format(memory):
    rows = messages_rows(memory)
    for row in rows:
        assert set(row) == {"messages"}
        _valid_messages(row["messages"])
        assert any(m["role"] == "assistant" for m in row["messages"])
    contents = [[m["content"] for m in row["messages"]] for row in rows]
    assert contents == [
        [SYSTEM, "What is 2+2?", "4.", "And 3+3?", "6."],
        [SYSTEM, "Capital of France?", "Paris."],
        [SYSTEM, "Say hi", "Hi!"],  # the correction replaces the bad answer; the stopped turn is cut
    ]
    assert len(messages_rows(memory, rated_only=True)) == 2


def test_preference_format(memory):
    rows = preference_rows(memory)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        _valid_messages(row["prompt"])
        assert row["prompt"][-1]["role"] == "user" and row["chosen"] != row["rejected"]
    pairs = {(row["prompt"][-1]["content"], row["chosen"], row["rejected"]) for row in rows}
    assert pairs == {
        ("Capital of France?", "Paris.", "Berlin."),
        ("Capital of France?", "Paris.", "Lyon."),
        ("Say hi", "Hi!", "Goodbye."),
    }
    france = next(r for r in rows if r["rejected"] == "Berlin.")
    assert france["prompt"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Capital of France?"},
    ]


def test_export_writes_jsonl_and_refuses_to_overwrite(memory, tmp_path):
    out = str(tmp_path / "prefs.jsonl")
    assert export(memory, ExportConfig(format="preference", output=out)) == 3
    with open(out) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 3
    with pytest.raises(ValueError, match="exists"):
        export(memory, ExportConfig(format="preference", output=out))
    assert export(memory, ExportConfig(format="messages", output=out, overwrite=True)) == 3
    with pytest.raises(ValueError, match="format"):
        ExportConfig(format="alpaca")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
