"""The benchmark's table and goal lines (the measurements themselves are `bazel run //prime:bench`)."""

import os
import sys

import pytest

from jarvis_prime import bench
from jarvis_prime.bench import Row, available, format_table, goals

ROWS = [
    Row("prime-jax", None, 9.0, 0.1, 900.0, 40.0, 64, 900.0),
    Row("prime-mlx", None, 2.0, 4.0, 11.0, 8.1, 64, 700.0),
    Row("mlx-lm", None, 2.0, 4.0, 11.0, 8.4, 64, 700.0),
    Row("transformers", None, 3.0, 0.2, 446.0, 15.8, 64, 1200.0),
    Row("llama.cpp", "Q4_1", note="not available (llama-cpp-python is not installed)"),
]


def test_table_has_every_row():
    table = format_table(ROWS)
    assert "prime-jax" in table and "llama.cpp" in table and "not available" in table
    assert "40.0" in table and "446.0" in table


def test_goal_lines():
    lines = goals(ROWS, "jax", apple_silicon=False)
    assert "2.53x (goal >= 2x): MET" in lines[0]
    assert "(goal >= 1x): MET" in lines[1]
    assert "+3.6% decode" in lines[2] and "informational" in lines[2]
    slow = [Row("prime-jax", None, decode_tps=20.0, prompt_tps=300.0), ROWS[3]]
    assert "MISSED" in goals(slow, "jax", apple_silicon=False)[0]
    # The goal is judged on the row of the model's default quantization on this machine.
    rows = [*slow, Row("prime-jax", "8bit", decode_tps=64.0, prompt_tps=600.0)]
    line = goals(rows, "jax", apple_silicon=False, default_quant="8bit")[0]
    assert "(jax, 8bit) decode 64.0" in line and "4.05x (goal >= 2x): MET" in line


def test_llama_cpp_availability_is_reported():
    import importlib.util

    why = available("llama.cpp")
    assert (why is None) == (importlib.util.find_spec("llama_cpp") is not None)
    if why:
        assert "--llama_cpp=build" in why


def test_llama_cpp_is_found_in_the_bench_tool_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIME_HOME", str(tmp_path))
    target = bench.llama_cpp_dir()
    assert target.startswith(str(tmp_path / "tools" / f"llama-cpp-python-{bench.LLAMA_CPP_VERSION}-py"))
    package = os.path.join(target, "llama_cpp")
    os.makedirs(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    assert available("llama.cpp", target) is None
    # Already there: nothing is built, nothing is printed.
    assert bench.build_llama_cpp(target, log=lambda *a, **k: pytest.fail(f"rebuilt: {a}")) is None


def test_failed_llama_cpp_build_names_its_log_and_leaves_nothing_half_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.sys, "executable", "/bin/false")  # pip "fails" at once
    target = str(tmp_path / "tools" / "llama")
    printed = []
    why = bench.build_llama_cpp(target, log=lambda *a, **k: printed.append(a[0]))
    assert why.startswith("not available: building llama-cpp-python failed (pip exit 1)")
    assert why.endswith(f"see {target}.log") and os.path.exists(target + ".log")
    assert not os.path.exists(target) and not os.path.exists(target + ".partial")
    assert "building llama-cpp-python" in printed[0]


def test_llama_cpp_goal_line():
    rows = [*ROWS[:4], Row("llama.cpp", "Q4_1", decode_tps=100.0, prompt_tps=340.0)]
    line = goals(rows, "jax", apple_silicon=False)[2]
    assert line == "default backend vs llama.cpp (Q4_1, the bar): decode 0.40x, prefill 2.65x"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
