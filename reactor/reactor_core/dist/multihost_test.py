"""Two processes on localhost (CPU, gloo) train the tiny model together through jax.distributed.

Each process has 2 CPU devices; the global mesh is data:2 x fsdp:2 over 4 devices. The result
must equal a single-process, single-device run (losses rtol 2e-5, params atol 5e-5) and be
identical on both processes. A preemption notice on process 1 after step 3 stops both after
that same step; then both write one Orbax checkpoint into a shared directory and restore it.
(One launch for all of it: starting two JAX processes is the slow part on a 2-core box.)
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

from reactor_core.dist import multihost
from reactor_core.dist.reference_train import ShardedRun, free_port, run_together, synthetic_batches
from reactor_core.models.config import LlamaConfig

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _launch(tmp_path, *extra):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("XLA_FLAGS", None)
    cmds = [
        [sys.executable, WORKER, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
         f"--process_id={i}", f"--out={tmp_path}", *extra]
        for i in range(2)
    ]  # fmt: skip
    for code, out in run_together(cmds, env):
        assert code == 0, out[-3000:]
    results = [json.loads((tmp_path / f"result_{i}.json").read_text()) for i in range(2)]
    params = [np.load(tmp_path / f"params_{i}.npz") for i in range(2)]
    return results, [[f[k] for k in sorted(f.files, key=lambda n: int(n.split("_")[1]))] for f in params]


def test_two_processes_match_single_process(tmp_path):
    results, params = _launch(tmp_path, "--steps=6", "--notice_at=3", f"--ckpt_dir={tmp_path / 'ckpt'}")
    assert [r["process_count"] for r in results] == [2, 2]
    assert [r["stopped_at"] for r in results] == [3, 3]  # only process 1 got the notice
    assert results[0]["losses"] == results[1]["losses"]
    for a, b in zip(*params, strict=True):
        np.testing.assert_array_equal(a, b)
    # Orbax checkpoint written by both processes into one directory, restored exactly.
    assert results[0]["ckpt_roundtrip"] and results[1]["ckpt_roundtrip"]
    assert results[0]["ckpt_extra"] == {"data": {"next": 4}}
    for r in results:  # before any bucket call: the refusal names the flag and the way out
        assert "--checkpoint_dir=gs://bucket/run with 2 processes" in r["gcs_refusal"], r.get("gcs_refusal")
        assert "gcsfuse" in r["gcs_refusal"]

    config = LlamaConfig.preset("tiny")
    run = ShardedRun.create(config)
    ref = [float(run.step(b)) for b in synthetic_batches(steps=4, batch_size=8, seq_len=16, vocab=config.vocab_size)]
    np.testing.assert_allclose(results[0]["losses"], ref, rtol=2e-5)
    for a, b in zip(params[0], jax.tree.leaves(jax.device_get(run.params)), strict=True):
        np.testing.assert_allclose(a, b, atol=5e-5)


def test_config_validation_and_env():
    with pytest.raises(ValueError, match="missing"):
        multihost.DistributedConfig(coordinator_address="h:1")
    with pytest.raises(ValueError, match="HOST:PORT"):
        multihost.DistributedConfig(coordinator_address="h", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        multihost.DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=2)
    cfg = multihost.DistributedConfig.from_env(
        {"REACTOR_COORDINATOR_ADDRESS": "10.0.0.2:8476", "REACTOR_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    )
    assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("10.0.0.2:8476", 4, 3)
    assert multihost.DistributedConfig.from_env({}, process_id=None) == multihost.DistributedConfig()
    assert multihost.initialize(multihost.DistributedConfig()) == 1  # nothing set, not a TPU VM


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
