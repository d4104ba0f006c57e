"""Environment detection against a fake metadata server; profile defaults per machine."""

import json
import subprocess
import sys
import time

import pytest

from reactor_core import env as env_lib
from reactor_core import env_cli
from reactor_core.gcp.fake_metadata import ON_DEMAND_VM, SPOT_VM, FakeMetadataServer

GB = 2**30


@pytest.fixture
def off_gcp(monkeypatch, tmp_path):
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    monkeypatch.setattr(env_lib, "DMI_PRODUCT_NAME", str(tmp_path / "no-dmi"))


def test_import_is_cheap_and_offline():
    heavy = "('jax', 'optax', 'orbax', 'google.cloud.storage')"
    code = f"import sys, reactor_core.env; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "[]"


def _env():
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def test_off_gcp_answers_fast_without_network(off_gcp, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("metadata server contacted off GCP")

    monkeypatch.setattr(env_lib, "metadata_get", no_network)
    start = time.monotonic()
    env = env_lib.detect()
    assert time.monotonic() - start < 1.0
    assert env.gcp is None and env.kind in ("cpu", "cuda", "tpu_vm")
    assert env.memory_bytes > 0


def test_gcp_probe_gives_up_fast_when_server_is_missing(monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    env = env_lib.detect()
    assert time.monotonic() - start < 1.0
    assert env.gcp is None


@pytest.mark.parametrize("values, spot", [(SPOT_VM, True), (ON_DEMAND_VM, False)])
def test_gcp_vm_spot_and_on_demand(values, spot, monkeypatch):
    with FakeMetadataServer(values) as server:
        monkeypatch.setenv("GCE_METADATA_HOST", server.host)
        env = env_lib.detect()
    assert env.kind == "gcp_vm"
    assert env.gcp.spot is spot
    assert env.gcp.provisioning_model == ("SPOT" if spot else "STANDARD")
    assert (env.gcp.zone, env.gcp.machine_type, env.gcp.project) == ("us-central1-a", "e2-standard-8", "ironcliw-test")
    prof = env_lib.profile(env.__class__(**{**env.__dict__, "memory_bytes": 32 * GB, "accelerators": ()}))
    assert prof.training_allowed and prof.auto_resume
    assert {"lora", "dpo"} <= set(prof.methods) and prof.sharding == "fsdp"
    assert prof.checkpoint_every_steps == (50 if spot else 200)


def test_metadata_requires_flavor_header(monkeypatch):
    with FakeMetadataServer(SPOT_VM) as server:
        assert env_lib.metadata_get("instance/name", host=server.host) == "reactor-train-1"
        assert env_lib.metadata_get("instance/missing", host=server.host) is None


def test_tpu_vm_from_metadata(monkeypatch):
    with FakeMetadataServer({**SPOT_VM, "instance/attributes/accelerator-type": "v5litepod-8"}) as server:
        monkeypatch.setenv("GCE_METADATA_HOST", server.host)
        env = env_lib.detect()
    assert env.kind == "tpu_vm"
    assert env_lib.profile(env).training_allowed


def _env_of(kind, mem_gb, accelerators=(), gcp=None, system="Linux", machine="x86_64"):
    return env_lib.Environment(kind, system, machine, 8, int(mem_gb * GB), tuple(accelerators), gcp)


def test_profiles_table():
    m1 = [env_lib.Accelerator("metal", "Apple M1", 1)]
    mac = env_lib.profile(_env_of("apple_silicon", 16, m1, system="Darwin", machine="arm64"))
    assert not mac.training_allowed and "inference-only" in mac.reason
    assert (mac.backend, mac.quantization) == ("mlx", "4bit")
    cuda = env_lib.profile(_env_of("cuda", 64, [env_lib.Accelerator("cuda", "NVIDIA L4", 2, 24 * GB)]))
    assert cuda.training_allowed and "full" in cuda.methods and cuda.micro_batch_size == 4
    assert not cuda.auto_resume  # a workstation: resuming is the user's call
    cpu = env_lib.profile(_env_of("cpu", 24))
    assert cpu.training_allowed and cpu.sharding == "dp"
    # Steps of seconds on a CPU box: 1,024 tokens (8 GB: 512), not the 8 x 1,024 of a GPU run.
    assert (cpu.micro_batch_size, cpu.max_seq_len) == (2, 512)
    small = env_lib.profile(_env_of("cpu", 8))
    assert (small.micro_batch_size, small.max_seq_len) == (1, 512)


def test_cli_prints_table_and_json(off_gcp, capsys):
    assert env_cli.main([]) == 0
    assert "profile" in capsys.readouterr().out
    assert env_cli.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"]["training_allowed"] in (True, False)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
