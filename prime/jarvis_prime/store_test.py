import os
import sys

import pytest

from jarvis_prime.store import Store, default_home, fingerprint


def test_prime_home_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("PRIME_HOME", str(tmp_path / "ph"))
    assert default_home() == str(tmp_path / "ph")
    assert Store.default().model_dir("m") == str(tmp_path / "ph" / "models" / "m")


def test_default_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("PRIME_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if sys.platform != "darwin":
        assert default_home() == str(tmp_path / "cache" / "prime")


def test_writing_is_atomic(tmp_path):
    store = Store(str(tmp_path))
    assert not store.has_converted("mlx-4bit", "k")
    with pytest.raises(RuntimeError), store.writing("mlx-4bit", "k") as tmp:
        open(os.path.join(tmp, "half"), "w").close()
        raise RuntimeError("crash mid-conversion")
    assert not store.has_converted("mlx-4bit", "k")
    assert os.listdir(tmp_path / "converted") == []  # nothing half-written left behind
    with store.writing("mlx-4bit", "k", {"source": "x"}) as tmp:
        open(os.path.join(tmp, "model.safetensors"), "w").close()
    assert store.has_converted("mlx-4bit", "k")


def test_fingerprint_follows_content(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    a = fingerprint(str(tmp_path), "8bit")
    assert a == fingerprint(str(tmp_path), "8bit")
    assert a != fingerprint(str(tmp_path), "4bit")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    assert a != fingerprint(str(tmp_path), "8bit")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
