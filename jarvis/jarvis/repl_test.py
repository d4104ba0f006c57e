"""The REPL driven as a user would, in a pseudo-terminal, on the real offline default model
(prime-135m-chat-v1): a question, /good, /stats, /new, /history, /load, /exit.

Run: bazel test //jarvis:repl_test
"""

import os
import re
import sys

import pexpect
import pytest

from jarvis.memory import Memory

TIMEOUT = 600  # loading and compiling the model on a busy 2-core machine


def _env(home, prime_home):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
        JARVIS_HOME=home,
        PRIME_HOME=prime_home,  # Prime's store of converted weights, writable inside a test sandbox
        NO_COLOR="1",
        TERM="dumb",
    )
    return env


def test_repl_session(tmp_path):
    home = str(tmp_path / "home")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "jarvis.cli", "--max-tokens", "24", "--temperature", "0"],
        env=_env(home, str(tmp_path / "prime")),
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(40, 200),
    )
    try:
        child.expect("Jarvis 2.0.0 · prime-135m-chat-v1")
        child.expect("you> ")
        child.sendline("What is the capital of France?")
        child.expect("jarvis> ")
        child.expect(r"\[(\d+) tokens · [\d.]+ tok/s · first token [\d.]+ s · prompt (\d+) tokens")
        assert int(child.match.group(1)) >= 1
        child.expect("you> ")

        child.sendline("/good")
        child.expect("Rated good")
        child.expect("you> ")
        child.sendline("/stats")
        child.expect("last answer")
        child.expect("you> ")

        child.sendline("/new")
        child.expect("New conversation.")
        child.expect("you> ")
        child.sendline("/history")
        child.expect(r"([0-9a-f]{12})  [\d-]+ [\d:]+\s+2 msgs  What is the capital of France\?")
        conversation_id = child.match.group(1)
        child.expect("you> ")

        child.sendline(f"/load {conversation_id[:6]}")
        child.expect(f"Conversation {conversation_id}")
        child.expect("you> What is the capital of France?")
        child.expect("you> ")
        child.sendline("/bogus")
        child.expect("Unknown command /bogus")
        child.expect("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    except (pexpect.TIMEOUT, pexpect.EOF):
        pytest.fail(f"the REPL did not answer as expected; last output:\n{child.before}")
    finally:
        child.close()
    assert child.exitstatus == 0

    with Memory.open(home) as memory:
        (conv,) = memory.conversations()
        user, answer = memory.messages(conv.id)
        assert (user.role, user.content) == ("user", "What is the capital of France?")
        assert answer.role == "assistant" and answer.content.strip() and answer.model == "prime-135m-chat-v1"
        assert answer.rating == 1 and answer.generated_tokens >= 1 and answer.reply_to == user.id
        assert re.search(r'"temperature": 0', answer.sampling)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
