import builtins
import json
import os
import pathlib
import shutil
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jarvis_prime import ModelNotAvailableError, PrimeWarning, UnknownModelError, gcs, sources
from jarvis_prime.store import Store
from jarvis_prime.testing import make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIME_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PRIME_GCS_BUCKET", raising=False)
    return Store.default()


def copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_local_directory(tiny, store):
    r = sources.resolve(tiny, store=store)
    assert r.source == "directory" and r.path == tiny and r.info.name == "tiny" and r.info.status == "loadable"
    assert r.info.preset == "custom" and r.info.parameters > 0


def test_missing_directory(store, tmp_path):
    with pytest.raises(ModelNotAvailableError, match="No model directory"):
        sources.resolve(str(tmp_path / "nope"), store=store)


def test_unknown_name(store):
    with pytest.raises(UnknownModelError, match="prime-135m-chat-v1"):
        sources.resolve("prime-135m-chat", store=store)


def test_store_is_tried_for_catalogue_names(tiny, store):
    copy(tiny, store.model_dir("prime-13b-reasoning-v1"))
    r = sources.resolve("prime-13b-reasoning-v1", store=store)
    assert r.source == "store" and r.info.name == "prime-13b-reasoning-v1"
    assert sources.status(sources.catalogue.CATALOGUE["prime-13b-reasoning-v1"], store) == "loadable"


def test_absent_offline_says_what_to_put_where(store):
    with pytest.raises(ModelNotAvailableError) as err:
        sources.resolve("prime-13b-reasoning-v1", store=store)
    message = str(err.value)
    assert store.model_dir("prime-13b-reasoning-v1") in message
    assert "config.json" in message and "tokenizer.json" in message
    assert "PRIME_GCS_BUCKET" in message and "meta-llama/Llama-2-13b-chat-hf" in message


def test_absent_7b_falls_back_to_the_offline_default_with_a_warning(store, monkeypatch):
    calls = []
    monkeypatch.setattr(sources, "_package_dir", lambda e, s: calls.append(e.name) or "/fake")
    monkeypatch.setattr(sources, "validate_dir", lambda path: {"model_type": "llama"})
    with pytest.warns(
        PrimeWarning, match=r"Loading prime-135m-chat-v1 instead of prime-7b-chat-v1.*models/prime-7b-chat-v1"
    ):
        r = sources.resolve("prime-7b-chat-v1", store=store)
    assert r.info.name == "prime-135m-chat-v1" and r.requested == "prime-7b-chat-v1" and calls
    with pytest.raises(ModelNotAvailableError, match="prime-7b-chat-v1"):
        sources.resolve("prime-7b-chat-v1", store=store, fallback=False)


def test_vision_is_listed_but_not_loadable(store):
    with pytest.raises(ModelNotAvailableError, match="vision encoder"):
        sources.resolve("prime-7b-vision-v1", store=store)


# ---- corrupt directories ----


def break_config(d):
    (d / "config.json").write_text("{oops")


def drop_config(d):
    os.remove(d / "config.json")


def truncate_weights(d):
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def garbage_weights(d):
    (d / "model.safetensors").write_bytes(b"\x00" * 4)


def drop_weights(d):
    os.remove(d / "model.safetensors")


def drop_tokenizer(d):
    os.remove(d / "tokenizer.json")


def missing_shard(d):
    os.rename(d / "model.safetensors", d / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def wrong_model_type(d):
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, match",
    [
        (break_config, "config.json is not valid JSON"),
        (drop_config, "no config.json"),
        (truncate_weights, "truncated"),
        (garbage_weights, "not a valid safetensors"),
        (drop_weights, "no weights"),
        (drop_tokenizer, "no tokenizer"),
        (missing_shard, "model-00002-of-00002.safetensors"),
        (wrong_model_type, "gpt2"),
    ],
)
def test_corrupt_directory(tiny, tmp_path, store, damage, match):
    d = tmp_path / "broken"
    copy(tiny, d)
    damage(d)
    with pytest.raises(ModelNotAvailableError, match=match) as err:
        sources.resolve(str(d), store=store)
    assert str(d) in str(err.value)
    assert err.value.__cause__ is None  # no library traceback chained on
    assert err.value.__context__ is None or err.value.__suppress_context__


# ---- gs:// ----


class FakeBlob:
    def __init__(self, name, data):
        self.name, self.data = name, data

    def download_to_filename(self, dest):
        with open(dest, "wb") as f:
            f.write(self.data)


class FakeClient:
    def __init__(self, files):
        self.files = files

    def list_blobs(self, bucket, prefix=None):
        assert bucket == "bkt"
        return [FakeBlob(n, d) for n, d in self.files.items() if n.startswith(prefix or "")]


def test_gcs_download_dir(tiny, tmp_path):
    files = {f"models/m/{n}": pathlib.Path(tiny, n).read_bytes() for n in os.listdir(tiny)}
    target = str(tmp_path / "m")
    assert gcs.download_dir("gs://bkt/models/m", target, storage_client=FakeClient(files)) == len(files)
    assert sorted(os.listdir(target)) == sorted(os.listdir(tiny))
    with pytest.raises(ModelNotAvailableError, match="holds no files"):
        gcs.download_dir("gs://bkt/other", str(tmp_path / "o"), storage_client=FakeClient(files))


def test_gcs_source_fills_the_store(tiny, store, monkeypatch):
    files = {f"prefix/prime-13b-reasoning-v1/{n}": pathlib.Path(tiny, n).read_bytes() for n in os.listdir(tiny)}
    monkeypatch.setenv("PRIME_GCS_BUCKET", "gs://bkt/prefix")
    monkeypatch.setattr(gcs, "client", lambda: FakeClient(files))
    r = sources.resolve("prime-13b-reasoning-v1", store=store)
    assert r.source == "gs" and r.path == store.model_dir("prime-13b-reasoning-v1")
    assert sources.resolve("prime-13b-reasoning-v1", store=store).source == "store"  # second time: local


def test_gs_uri_as_a_directory(tiny, store, monkeypatch):
    files = {f"dirs/tiny/{n}": pathlib.Path(tiny, n).read_bytes() for n in os.listdir(tiny)}
    monkeypatch.setattr(gcs, "client", lambda: FakeClient(files))
    r = sources.resolve("gs://bkt/dirs/tiny", store=store)
    assert r.source == "directory" and r.path == store.model_dir("gs--bkt--dirs--tiny")
    monkeypatch.setattr(gcs, "client", lambda: pytest.fail("downloaded twice"))
    assert sources.resolve("gs://bkt/dirs/tiny/", store=store).path == r.path


def test_hub_id_offline_says_so(store):
    with pytest.raises(ModelNotAvailableError, match="needs the network"):
        sources.resolve("HuggingFaceTB/SmolLM2-135M-Instruct", store=store)


def test_gcs_without_the_package_names_it(monkeypatch):
    real_import = builtins.__import__

    def no_gcs(name, *args, **kwargs):
        if name.startswith("google.cloud"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gcs)
    with pytest.raises(ModelNotAvailableError, match="pip install google-cloud-storage"):
        gcs.client()


def test_bad_gs_uri():
    with pytest.raises(ModelNotAvailableError, match="gs://"):
        gcs.split_uri("s3://x/y")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
