"""pybind11_extension(): a Python extension module built against @pyenv's interpreter."""

load("//tools:cc.bzl", "MLFORGE_COPTS", "MLFORGE_LINKOPTS")

def pybind11_extension(name, srcs, deps = [], copts = [], visibility = None, **kwargs):
    """Builds `<name>.so` (importable as `name`) and a py_library `name` carrying it."""
    native.cc_binary(
        name = name + ".so",
        srcs = srcs,
        deps = deps + ["@pyenv//:pybind11_headers"],
        copts = MLFORGE_COPTS + copts + ["-fvisibility=hidden"],
        linkopts = MLFORGE_LINKOPTS,
        linkshared = True,
        linkstatic = True,
        visibility = ["//visibility:private"],
        **kwargs
    )
    native.py_library(
        name = name,
        data = [":" + name + ".so"],
        visibility = visibility,
    )
