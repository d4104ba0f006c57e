"""A second launch compiles nothing: the engine's programs come from the persistent cache.

Run: bazel test //prime:compile_cache_test
"""

import json
import os
import subprocess
import sys

import pytest

# One launch: enable the cache under a store, build an engine on a tiny Llama, warm it up,
# and report JAX's persistent-cache events and the engine's program count.
_LAUNCH = r"""
import collections, json, sys
import jax
from flax import nnx
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from jarvis_prime import compile_cache
from jarvis_prime.engine import EngineConfig, GenerationEngine
from jarvis_prime.store import Store
directory = compile_cache.enable(Store(sys.argv[1]))
engine = GenerationEngine(Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)), EngineConfig(slots=2, capacity=128))
engine.warm_up()
programs = engine.traces
engine.close()
print(json.dumps({
    "directory": directory,
    "programs": programs,
    "hits": events["/jax/compilation_cache/cache_hits"],
    "misses": events["/jax/compilation_cache/cache_misses"],
}))
"""


def _launch(store: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCH, store], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_launch_reads_every_program_from_the_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PRIME_COMPILE_CACHE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    first = _launch(str(tmp_path), env)
    assert first["directory"] == str(tmp_path / "xla-cache")
    assert first["programs"] >= 5  # 3 chunk sizes, 2 batch sizes, the mask reset
    assert first["misses"] >= first["programs"] and os.listdir(first["directory"])
    second = _launch(str(tmp_path), env)
    assert second["programs"] == first["programs"]
    assert second["misses"] == 0, second
    assert second["hits"] >= second["programs"]


def test_environment_variable_picks_the_directory(tmp_path):
    env = dict(os.environ, PRIME_COMPILE_CACHE=str(tmp_path / "elsewhere"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    assert _launch(str(tmp_path / "store"), env)["directory"] == str(tmp_path / "elsewhere")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
