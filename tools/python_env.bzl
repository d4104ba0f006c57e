"""Repository rule: a hermetic Python environment from a hash-pinned lock file.

It creates a virtual environment (without system site-packages) on the host `python3`
(3.11 or newer), installs `requirements_lock.txt` with `--require-hashes`, and exposes:

  @pyenv//:python_toolchain   the Python toolchain (registered in WORKSPACE)
  @pyenv//:<package>          one py_library per locked distribution, for requirement()
  @pyenv//:python_headers     the interpreter's C headers (for pybind11 extensions)
  @pyenv//:pybind11_headers   pybind11's headers from the locked wheel
  @pyenv//:xla_ffi_headers    XLA's FFI API headers from the locked jaxlib wheel (header-only;
                              what jax.ffi.include_dir() points at), for jax.ffi handlers

The venv lives in this external repository; py_runtime points at it by path, so tests
do not copy the tens of thousands of files of jax and torch into their runfiles.
"""

_MIN_PYTHON = (3, 11)

def _normalize(name):
    return name.lower().replace("-", "_").replace(".", "_")

def _locked_names(text):
    names = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("--"):
            continue
        if "==" not in line:
            continue
        spec = line.split("==")[0].strip()
        if "[" in spec:
            spec = spec.split("[")[0]
        names[_normalize(spec)] = True
    return sorted(names.keys())

def _run(rctx, args, what, timeout = 3600, quiet = True):
    result = rctx.execute(args, timeout = timeout, quiet = quiet)
    if result.return_code != 0:
        fail("python_env: {} failed (exit {}).\nstdout:\n{}\nstderr:\n{}".format(
            what,
            result.return_code,
            result.stdout[-4000:],
            result.stderr[-4000:],
        ))
    return result

def _python_env_impl(rctx):
    python = rctx.which(rctx.attr.python)
    if python == None:
        fail("python_env: '{}' not found on PATH. Install Python {}.{} or newer.".format(
            rctx.attr.python,
            _MIN_PYTHON[0],
            _MIN_PYTHON[1],
        ))
    version = _run(rctx, [python, "-c", "import sys; print('%d %d' % sys.version_info[:2])"], "probing python").stdout.strip().split(" ")
    if (int(version[0]), int(version[1])) < _MIN_PYTHON:
        fail("python_env: {} is Python {}.{}; this workspace needs {}.{} or newer.".format(
            python,
            version[0],
            version[1],
            _MIN_PYTHON[0],
            _MIN_PYTHON[1],
        ))

    lock = rctx.path(rctx.attr.lock)
    nodeps_lock = rctx.path(rctx.attr.nodeps_lock)
    venv = rctx.path("venv")
    rctx.report_progress("creating venv on " + str(python))
    _run(rctx, [python, "-m", "venv", "--clear", str(venv)], "creating the venv")
    vpython = str(venv) + "/bin/python3"
    pip = [vpython, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--require-hashes", "--no-deps"]
    rctx.report_progress("installing " + str(lock) + " (first run: several minutes)")
    _run(rctx, pip + ["-r", str(lock)], "pip install -r " + str(lock))
    rctx.report_progress("installing " + str(nodeps_lock))
    _run(rctx, pip + ["-r", str(nodeps_lock)], "pip install -r " + str(nodeps_lock))

    paths = _run(rctx, [vpython, "-c", "\n".join([
        "import importlib.util, os, sysconfig, pybind11",
        "print(sysconfig.get_paths()['include'])",
        "print(pybind11.get_include())",
        "print(sysconfig.get_config_var('EXT_SUFFIX'))",
        # jaxlib's own include dir, located without importing jax (slow).
        "spec = importlib.util.find_spec('jaxlib')",
        "print(os.path.join(os.path.dirname(spec.origin), 'include') if spec else '')",
    ])], "locating headers").stdout.splitlines()
    rctx.symlink(paths[0], "python_include")
    rctx.symlink(paths[1], "pybind11_include")
    if paths[3]:
        rctx.symlink(paths[3], "jaxlib_include")
    else:
        rctx.file("jaxlib_include/README", "jaxlib is not in the lock; xla_ffi_headers is empty\n")

    names = _locked_names(rctx.read(lock)) + _locked_names(rctx.read(nodeps_lock))
    libs = "\n".join([
        'py_library(name = "{}", visibility = ["//visibility:public"])'.format(n)
        for n in names
    ])
    rctx.file("BUILD.bazel", """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

exports_files(["venv/bin/python3"])

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{vpython}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "python_toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)

cc_library(
    name = "python_headers",
    hdrs = glob(["python_include/**/*.h"]),
    includes = ["python_include"],
)

cc_library(
    name = "pybind11_headers",
    hdrs = glob(["pybind11_include/**/*.h"]),
    includes = ["pybind11_include"],
    deps = [":python_headers"],
)

cc_library(
    name = "xla_ffi_headers",
    hdrs = glob(["jaxlib_include/xla/ffi/api/*.h"]),
    includes = ["jaxlib_include"],
)

# One target per locked distribution. The packages live in the venv the toolchain runs;
# these targets make every BUILD file state what its code imports (see //tools:deps_guard).
{libs}
""".format(vpython = vpython, libs = libs))
    rctx.file("python.txt", vpython + "\n")
    rctx.file("ext_suffix.txt", paths[2] + "\n")

python_env = repository_rule(
    implementation = _python_env_impl,
    attrs = {
        "lock": attr.label(mandatory = True, allow_single_file = True),
        "nodeps_lock": attr.label(mandatory = True, allow_single_file = True),
        "python": attr.string(default = "python3"),
    },
    environ = ["PATH", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"],
)
