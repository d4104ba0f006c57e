"""llama.cpp (llama-cpp-python) as the benchmarks' peer: where its build lives and how to load it.

    llm, note = llama_cpp_peer.load(model_path, n_ctx=4096, threads=2)

Prime's bench builds the pinned llama-cpp-python once into `$PRIME_HOME/tools/`
(`bench.build_llama_cpp`); Jarvis's conversation bench finds the same build with
`installed_dir()`. Neither is a dependency: the module is imported by name, in the
benchmark's own subprocess, after its directory is put on sys.path.

On CPUs with AMX, llama.cpp's AMX weight buffers crash in llama_decode with this build (seen
on an Intel Xeon with amx_bf16), so `load` turns the extra buffer types off there; Q4_1 has
no other repacked layout, so this is plain llama.cpp CPU code.
"""

from __future__ import annotations

import glob
import importlib
import os
import platform
import sys

from jarvis_prime import store


def installed_dir() -> str | None:
    """The newest llama-cpp-python built into $PRIME_HOME/tools for this Python and machine, or None."""
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"
    found = glob.glob(os.path.join(store.default_home(), "tools", f"llama-cpp-python-*-{tag}"))
    found = [d for d in found if os.path.isfile(os.path.join(d, "llama_cpp", "__init__.py"))]
    return max(found, key=os.path.getmtime, default=None)


def has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx" in line for line in f)
    except OSError:
        return False


def load(model_path: str, *, n_ctx: int, threads: int, **kwargs):
    """(llama_cpp.Llama, a note naming the version, threads and any workaround)."""
    llama_cpp = importlib.import_module("llama_cpp")
    note = f"llama-cpp-python {llama_cpp.__version__}, {threads} threads"
    if has_amx():
        defaults = llama_cpp.llama_cpp.llama_model_default_params

        def no_extra_buffers():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = no_extra_buffers
        note += ", AMX buffers off (they crash)"
    llm = llama_cpp.Llama(
        model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False, **kwargs
    )
    return llm, note
