"""The scriptable command line: --prompt, piped stdin, --resume, export, and clean errors.

Run: bazel test //jarvis:cli_test
"""

import json
import os
import subprocess
import sys

import pytest

from jarvis import cli
from jarvis.memory import Memory
from jarvis.tiny_llama import make_tiny_llama


def _run(args, home, stdin=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), JARVIS_HOME=home)
    return subprocess.run(
        [sys.executable, "-m", "jarvis.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_prompt_piped_stdin_and_resume(tmp_path):
    home, model = str(tmp_path / "home"), make_tiny_llama()
    flags = ["--model", model, "--max-tokens", "6", "--temperature", "0"]
    first = _run([*flags, "--prompt", "Hello there"], home, stdin="")
    assert first.returncode == 0, first.stderr
    with Memory.open(home) as memory:
        (conv,) = memory.conversations()
        user, answer = memory.messages(conv.id)
    assert first.stdout == answer.content + "\n"  # the answer alone on stdout
    assert user.content == "Hello there"

    piped = _run(flags, home, stdin="A question\nover two lines\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip()

    resumed = _run([*flags, "--resume", conv.id[:8], "--prompt", "And then?"], home)
    assert resumed.returncode == 0, resumed.stderr
    with Memory.open(home) as memory:
        assert len(memory.conversations()) == 2
        assert [m.content for m in memory.messages(conv.id)][2] == "And then?"
        assert len(memory.messages(conv.id)) == 4


def test_empty_stdin_and_bad_model_fail_cleanly(tmp_path):
    home = str(tmp_path / "home")
    empty = _run([], home, stdin="")
    assert empty.returncode == 2 and "stdin was empty" in empty.stderr
    bad = _run(["--model", "prime-9000b", "--prompt", "hi"], home)
    assert (
        bad.returncode == 1 and "Unknown model 'prime-9000b'" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_export_resolves_paths_against_the_users_directory(tmp_path, monkeypatch, capsys):
    home = str(tmp_path / "home")
    with Memory.open(home) as memory:
        conv = memory.create_conversation()
        user = memory.add_message(conv.id, "user", "2+2?")
        good = memory.add_message(conv.id, "assistant", "4", reply_to=user.id)
        memory.rate(good.id, 1)
        memory.supersede(good.id)
        memory.rate(memory.add_message(conv.id, "assistant", "5", reply_to=user.id).id, -1)
    monkeypatch.setenv("BUILD_WORKING_DIRECTORY", str(tmp_path))  # as under `bazel run`
    assert cli.main(["export", "--format=preference", "--output=out/prefs.jsonl", "--home", home]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "prefs.jsonl").read_text().splitlines()]
    assert rows == [{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"}]
    assert "Wrote 1 preference example(s)" in capsys.readouterr().err
    assert cli.main(["export", "--format=preference", "--output=out/prefs.jsonl", "--home", home]) == 2


def test_help_and_unknown_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["--bogus"])
    assert e.value.code == 2


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
