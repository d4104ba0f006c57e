"""Jarvis's own code imports only the standard library, Prime and the server libraries:
no model or training code (torch, transformers, peft, jax, reactor_core, optax, orbax,
google-cloud-storage). Test helpers may use torch/transformers to build tiny models.

Run: bazel test //jarvis:imports_test
"""

import ast
import glob
import os
import sys

import pytest

ALLOWED = {"jarvis", "jarvis_prime", "fastapi", "starlette", "pydantic", "uvicorn", "httpx"}
TEST_HELPERS = {"tiny_llama.py", "live_server.py", "cdp.py"}
HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = sorted(
    p
    for p in glob.glob(os.path.join(HERE, "*.py"))
    if not p.endswith("_test.py") and os.path.basename(p) not in TEST_HELPERS
)


def _imports(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_found_the_sources():
    names = {os.path.basename(p) for p in LIBRARY}
    assert {"cli.py", "server.py", "engine.py", "memory.py", "repl.py"} <= names


@pytest.mark.parametrize("path", LIBRARY, ids=os.path.basename)
def test_library_imports(path):
    bad = sorted({m for m in _imports(path) if m not in ALLOWED and m not in sys.stdlib_module_names})
    assert not bad, f"{os.path.basename(path)} imports {bad}; Jarvis may use only {sorted(ALLOWED)}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
