"""A process killed with SIGKILL mid-answer loses no completed message and leaves the
database consistent. The child streams real answers from Prime (a tiny random Llama)
and saves them through Memory, as the REPL does; it also runs a large transaction whose
rows must appear all together or not at all.

Run: bazel test //jarvis:memory_kill_test
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jarvis.memory import Memory
from jarvis.tiny_llama import make_tiny_llama

CHILD = textwrap.dedent(
    """
    import sys
    from jarvis.memory import Memory
    from jarvis_prime import PrimeModel

    home, model_dir = sys.argv[1], sys.argv[2]
    memory = Memory.open(home)
    model = PrimeModel.from_pretrained(model_dir)
    conv = memory.create_conversation(model="tiny")
    print("ready", flush=True)
    i = 0
    while True:
        question = f"question {i}"
        user = memory.add_message(conv.id, "user", question)
        print("committed", user.id, question, flush=True)
        stream = model.chat_stream([{"role": "user", "content": question}], max_tokens=48, temperature=0.8, seed=i)
        text = "".join(stream) or "(empty)"
        answer = memory.add_message(conv.id, "assistant", text, reply_to=user.id, generated_tokens=stream.result.generated_tokens)
        print("committed", answer.id, repr(text), flush=True)
        bulk = memory.create_conversation(title=f"bulk {i}")
        with memory._tx() as db:  # one big transaction: all 500 rows or none
            for k in range(500):
                db.execute(
                    "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, 'user', ?, 0)",
                    (bulk.id, "x" * 200),
                )
        i += 1
    """
)


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def test_sigkill_mid_answer(tmp_path):
    model_dir = make_tiny_llama()
    home = str(tmp_path / "home")
    committed = {}
    rng = random.Random(0)
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, home, model_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_child_env(),
        )
        try:
            assert child.stdout.readline().strip() == "ready", "the child did not start"
            seen = 0
            target = 3 + round_  # completed messages before the kill
            while seen < target:
                line = child.stdout.readline()
                assert line.startswith("committed "), f"unexpected child output {line!r}"
                _, mid, text = line.rstrip("\n").split(" ", 2)
                committed[int(mid)] = text
                seen += 1
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in an answer or the big transaction
            child.send_signal(signal.SIGKILL)
            for line in child.stdout:  # lines printed after a commit, before the kill landed
                if line.startswith("committed "):
                    _, mid, text = line.rstrip("\n").split(" ", 2)
                    committed[int(mid)] = text
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL

        with Memory.open(home) as memory:
            assert memory.check() == [], "the database is inconsistent after SIGKILL"
            for mid, text in committed.items():
                m = memory.message(mid)
                shown = m.content if m.role == "user" else repr(m.content)
                assert shown == text, f"message {mid} changed"
                if m.role == "assistant":
                    assert memory.message(m.reply_to).role == "user"
            for conv in memory.conversations(limit=1000):
                if conv.title.startswith("bulk"):
                    assert conv.message_count in (0, 500), (
                        f"half a transaction survived: {conv.message_count} rows"
                    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
