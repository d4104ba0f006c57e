"""The REPL driven as a user would, in a pseudo-terminal, on the real offline default model
(prime-135m-chat-v1): a question, /good, /stats, /new, /history, /load, /exit. Then the
session behind it in-process on a tiny random Llama: context trimming, feedback, fallbacks.

Run: bazel test //jarvis:repl_test
"""

import io
import os
import re
import sys

import pexpect
import pytest

from jarvis.memory import Memory
from jarvis.repl import ChatConfig, Console, Session
from jarvis.router import Router, RouterConfig
from jarvis.sampling import Sampling
from jarvis.tiny_llama import make_tiny_llama

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


# ---- the session behind the REPL, in-process on a tiny random Llama ----


@pytest.fixture
def session(tmp_path):
    out = io.StringIO()
    model = make_tiny_llama(context_length=256)
    with Memory.open(str(tmp_path / "home")) as memory:
        s = Session(
            memory,
            Router(RouterConfig(model=model)),
            sampling=Sampling(max_tokens=16, temperature=0.0),
            config=ChatConfig(),
            console=Console(out=out, color=False),
            model=model,
        )
        s.out = out
        yield s


def _said(session):
    text = session.out.getvalue()
    session.out.seek(0)
    session.out.truncate()
    return text


def test_long_conversations_are_trimmed_with_a_notice(session):
    for i in range(8):
        assert session.ask(f"Question {i}: " + "tell me more about this " * 8) is not None
    said = _said(session)
    assert "[context: left out the" in said and "256-token window" in said
    assert len(session.memory.messages(session.conv.id)) == 16  # memory keeps everything
    session.command("/system " + "very long rules " * 200)
    assert session.ask("hi") is None and "error:" in _said(session)


def test_feedback_retry_and_settings_are_stored(session):
    first = session.ask("Hello")
    session.command("/bad Hello! How can I help?")
    assert "Rated bad." in _said(session)
    second = session.retry()
    session.command("/good")
    messages = session.memory.messages(session.conv.id, include_inactive=True)
    assert [m.id for m in messages if m.role == "assistant"] == [first.id, second.id]
    assert session.memory.message(first.id).active is False
    assert session.memory.message(first.id).correction == "Hello! How can I help?"
    assert session.memory.message(second.id).rating == 1
    session.command("/system Answer in French.")
    assert session.memory.conversation(session.conv.id).system_prompt == "Answer in French."


def test_missing_kinds_fall_back_with_notices(session, tmp_path):
    session.command("/reasoning on")
    assert "No reasoning model is installed" in _said(session)
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    session.command(f"/image {image}")
    assert session.ask("What is this?") is not None
    assert "the image is left out" in _said(session)
    last_user = [m for m in session.memory.messages(session.conv.id) if m.role == "user"][-1]
    assert last_user.attachments == (str(image),)


def test_command_errors_do_not_end_the_session(session):
    for line in ("/load nope", "/image /no/such/file.png", "/reasoning maybe", "/model prime-9000b", "/good"):
        assert session.command(line) is True
        assert "error:" in _said(session)
    assert session.command("/exit") is False
