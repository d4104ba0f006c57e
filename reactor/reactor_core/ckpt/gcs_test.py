"""gs:// checkpoints against a real local GCS server (gcp-storage-emulator on loopback)."""

import json
import os
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.ckpt import gcs
from reactor_core.ckpt.checkpoint import CheckpointManager
from reactor_core.ckpt.gcs_emulator import LocalGcs

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_uploader.py")
CONFIG = {"run": "gcs"}


@pytest.fixture
def server():
    with LocalGcs(bucket="ckpt") as s:
        yield s


def _state(step, n=1024):
    return {"w": jnp.full((n,), float(step), jnp.float32), "step": jnp.asarray(step)}


def _names(prefix):
    client = gcs.make_client()
    return sorted(b.name for b in client.list_blobs("ckpt", prefix=prefix))


def test_url_parsing():
    assert gcs.GcsUrl.parse("gs://b/a/b/") == gcs.GcsUrl("b", "a/b")
    assert gcs.GcsUrl.parse("gs://b").key(3, "x") == "3/x"
    with pytest.raises(ValueError, match="gs://BUCKET/PATH"):
        gcs.GcsUrl.parse("gs:///x")


def test_save_to_bucket_then_resume_on_a_fresh_machine(server, tmp_path):
    url = "gs://ckpt/runs/a"
    with CheckpointManager(url, keep=2, config=CONFIG, staging_dir=tmp_path / "vm1") as manager:
        for step in (10, 20, 30):
            manager.save(step, _state(step), {"data": {"index": step}})
        manager.wait()
    names = _names("runs/a/")
    assert {n.split("/")[2] for n in names} == {"20", "30"}  # keep=2 in the bucket too
    assert "runs/a/30/COMMIT.json" in names
    marker = json.loads(gcs.make_client().bucket("ckpt").blob("runs/a/30/COMMIT.json").download_as_bytes())
    assert all(f"runs/a/30/{rel}" in names for rel in marker["files"])

    # A new VM: empty local disk, same bucket.
    with CheckpointManager(url, keep=2, config=CONFIG, staging_dir=tmp_path / "vm2") as manager:
        assert manager.latest_step() == 30
        state, extra = manager.restore(_state(0))
        assert extra == {"data": {"index": 30}}
        np.testing.assert_array_equal(state["w"], np.full(1024, 30.0, np.float32))
        older, _ = manager.restore(_state(0), step=20)  # fetched on demand
        assert int(older["step"]) == 20


def test_upload_without_marker_is_ignored(server, tmp_path):
    url = "gs://ckpt/runs/b"
    with CheckpointManager(url, config=CONFIG, staging_dir=tmp_path / "vm1") as manager:
        manager.save(1, _state(1), {})
        manager.save(2, _state(2), {})
        manager.wait()
    # Make step 2 look like an upload that died before its marker.
    gcs.make_client().bucket("ckpt").blob("runs/b/2/COMMIT.json").delete()
    mirror = gcs.CheckpointMirror(url, str(tmp_path / "unused"))
    assert mirror.step_prefixes() == [1, 2] and mirror.complete_steps() == [1]
    with CheckpointManager(url, config=CONFIG, staging_dir=tmp_path / "vm2") as manager:
        assert manager.latest_step() == 1
        state, _ = manager.restore(_state(0))
        assert int(state["step"]) == 1
        with pytest.raises(FileNotFoundError, match="no COMMIT.json"):
            manager.restore(_state(0), step=2)


def test_killed_uploader_leaves_no_complete_step(server, tmp_path):
    url = "gs://ckpt/runs/c"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    n_small, n_big = 1024, 2**20
    first = [sys.executable, HELPER, url, str(tmp_path / "vm1"), "1", str(n_small)]
    subprocess.run(first, env=env, check=True, timeout=300)
    # "hold": the helper stalls after its first finished file, so the kill lands mid-upload.
    proc = subprocess.Popen([sys.executable, HELPER, url, str(tmp_path / "vm1"), "2", str(n_big), "hold"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == "uploading":
                assert _names("runs/c/2/"), "the helper said a file was up, the server lists none"
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -9, "uploader finished before it could be killed"
    assert "runs/c/2/COMMIT.json" not in _names("runs/c/2/")
    with CheckpointManager(url, config=CONFIG, staging_dir=tmp_path / "vm2") as manager:
        assert manager.latest_step() == 1
        state, extra = manager.restore({"w": jnp.zeros(n_small)})
        assert extra == {"next": 1} and float(state["w"][0]) == 1.0


def test_keep_one_with_back_to_back_saves(server, tmp_path):
    # Orbax deletes step N locally as soon as N+1 is committed, possibly mid-upload of N.
    url = "gs://ckpt/runs/e"
    with CheckpointManager(url, keep=1, config=CONFIG, staging_dir=tmp_path / "vm1") as manager:
        for step in range(1, 5):
            manager.save(step, _state(step, n=1 << 20), {})
        manager.wait()
    assert gcs.CheckpointMirror(url, str(tmp_path)).complete_steps() == [4]
    assert sorted(os.listdir(tmp_path)) == ["vm1"]  # no upload snapshots left behind


def test_restarted_vm_reuploads_a_step_whose_upload_died(server, tmp_path):
    url = "gs://ckpt/runs/d"
    with CheckpointManager(url, config=CONFIG, staging_dir=tmp_path / "vm1") as manager:
        manager.save(5, _state(5), {})
        manager.wait()
    gcs.CheckpointMirror(url, str(tmp_path / "vm1")).delete_step(5)  # as if the upload never happened
    with CheckpointManager(url, config=CONFIG, staging_dir=tmp_path / "vm1") as manager:
        manager.wait()  # same VM restarted: its local step 5 is uploaded again
    assert gcs.CheckpointMirror(url, str(tmp_path)).complete_steps() == [5]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
