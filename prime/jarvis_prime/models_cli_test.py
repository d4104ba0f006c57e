import json
import os
import sys

import pytest

from jarvis_prime import models_cli


@pytest.fixture(autouse=True)
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIME_HOME", str(tmp_path))


def test_table_lists_every_model_and_why(capsys):
    assert models_cli.main([]) == 0
    out = capsys.readouterr().out
    for name in ("prime-7b-chat-v1", "prime-7b-vision-v1", "prime-13b-reasoning-v1", "prime-135m-chat-v1"):
        assert name in out
    assert "Why not loadable:" in out and os.path.join(str(os.environ["PRIME_HOME"]), "models") in out
    assert "6.74B" in out and "135M" in out and "text+image" in out


def test_json(capsys):
    models_cli.main(["--json"])
    data = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in data][-1] == "prime-135m-chat-v1"
    assert set(data[0]["memory_bytes"]) == {"none", "8bit", "4bit"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
