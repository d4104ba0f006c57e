"""A resumed run reads its train step from the persistent compilation cache: zero compiles.

Each launch is a fresh process (as a restart after preemption is): the tiny model trains to
a checkpoint, then a second launch resumes from it. Compilations are counted per jitted
function from JAX's own compile events (compile_cache.Compilations), as generate_test
counts programs. Local checkpoints use a cache directory; gs:// checkpoints (a local GCS
server) resume on a "fresh VM" whose local cache is empty, so the cache must come back
from beside the checkpoints in the bucket.

Run: bazel test //reactor:compile_cache_test
"""

import json
import os
import shutil
import sys

import pytest

from reactor_core.ckpt.gcs_emulator import LocalGcs
from reactor_core.train import compile_cache, testing_data
from reactor_core.train.config import TrainingConfig

# One launch of a 4-step run: resumes from any checkpoint, is preempted (SIGTERM) after step
# `stop_at` if given, and reports the train step's compiles. Every launch has the same config:
# a changed --steps would be another program (the LR schedule's length is compiled in).
_LAUNCH = r"""
import json, os, signal, sys
from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.train import testing_data
from reactor_core.train.compile_cache import Compilations
from reactor_core.train.config import TrainingConfig
from reactor_core.train.hooks import Hook, Preempted
from reactor_core.train.trainer import Trainer
root, checkpoints, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
class Notice(Hook):
    def after_step(self, run):
        if run.step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
kw = testing_data.tiny_config_kwargs(root, steps=4, checkpoint_every=2, checkpoint_dir=checkpoints,
    checkpoint_resume=True, eval_fraction=0.0, plot=False, log_every=1, seq_len=32)
trainer = Trainer(TrainingConfig(**kw), tokenizer=tiny_tokenizer(), hooks=[Notice()])
with Compilations() as seen:
    try:
        steps = trainer.train(root + "/train.jsonl").steps
    except Preempted as e:
        steps = e.checkpoint_step
print(json.dumps({"compiles": seen.compiled("train_step"), "hits": seen.cache_hits("train_step"), "steps": steps}))
"""


def _launch(root, checkpoints, stop_at, **env_extra) -> dict:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "REACTOR_COMPILE"))}
    env.update(PYTHONPATH=os.pathsep.join(p for p in sys.path if p), JAX_PLATFORMS="cpu", **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(root), str(checkpoints), str(stop_at)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def root(tmp_path):
    testing_data.write_chat(str(tmp_path / "train.jsonl"), n=32)
    return tmp_path


def test_resume_with_a_warm_cache_does_not_compile_the_train_step(root):
    cache = {"REACTOR_COMPILE_CACHE": str(root / "xla-cache")}
    first = _launch(root, root / "ckpt", 2, **cache)  # preempted after step 2
    assert first["steps"] == 2 and first["compiles"] >= 1 and first["hits"] == 0, first
    assert os.listdir(root / "xla-cache")
    resumed = _launch(root, root / "ckpt", 0, **cache)  # the same command again: resumes at 2
    assert resumed["steps"] == 4
    assert resumed["compiles"] == 0 and resumed["hits"] >= 1, resumed
    # The same resume without the cache compiles again (so the count does see compiles).
    _launch(root, root / "ckpt_cold", 2, REACTOR_COMPILE_CACHE="off")
    cold = _launch(root, root / "ckpt_cold", 0, REACTOR_COMPILE_CACHE="off")
    assert cold["steps"] == 4 and cold["compiles"] >= 1 and cold["hits"] == 0, cold


def test_gcs_run_brings_the_cache_back_on_a_fresh_vm(root):
    with LocalGcs(bucket="runs") as server:
        url = "gs://runs/cc"
        gcs = {"STORAGE_EMULATOR_HOST": server.endpoint}
        # The same home path on every VM (JAX's compile options, hence its keys, name the cache dir).
        vm = {"XDG_CACHE_HOME": str(root / "home"), "REACTOR_CHECKPOINT_STAGING": str(root / "staging"), **gcs}
        first = _launch(root, url, 2, **vm)
        assert first["steps"] == 2 and first["compiles"] >= 1, first
        # A new VM: an empty disk (no local cache, no staged checkpoints); only the bucket survived.
        shutil.rmtree(root / "home")
        shutil.rmtree(root / "staging")
        resumed = _launch(root, url, 0, **vm)
    assert resumed["steps"] == 4
    assert resumed["compiles"] == 0 and resumed["hits"] >= 1, resumed


def test_cache_config_for_a_run(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    local = TrainingConfig(checkpoint_every=5, checkpoint_dir=str(tmp_path / "ckpt"))
    expected = compile_cache.CacheConfig(str(tmp_path / "reactor" / "xla-cache"))
    assert compile_cache.CacheConfig.for_run(local) == expected
    remote = compile_cache.CacheConfig.for_run(local.replace(checkpoint_dir="gs://b/run/"))
    assert remote.mirror_url == "gs://b/run.xla-cache" and remote.directory.endswith("/0")
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.CacheConfig.for_run(local).directory == ""
    with pytest.raises(ValueError, match="mirror_url"):
        compile_cache.CacheConfig(directory="/x/0", mirror_url="/not/gs")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
