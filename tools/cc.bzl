"""Shared C++ flags and macros for MLForge (one place for compiler options)."""

# -O3 for the kernels; SIMD paths are chosen at run time with per-function target
# attributes, so the same binary runs on machines without AVX2/AVX-512 (and on ARM).
MLFORGE_COPTS = [
    "-std=c++17",
    "-O3",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-fno-math-errno",
]

MLFORGE_LINKOPTS = ["-pthread"]

def mlforge_cc_library(name, copts = [], linkopts = [], **kwargs):
    native.cc_library(
        name = name,
        copts = MLFORGE_COPTS + copts,
        linkopts = MLFORGE_LINKOPTS + linkopts,
        **kwargs
    )

def mlforge_cc_test(name, copts = [], deps = [], **kwargs):
    native.cc_test(
        name = name,
        copts = MLFORGE_COPTS + copts,
        linkopts = MLFORGE_LINKOPTS,
        deps = deps + ["@gtest//:gtest_main"],
        **kwargs
    )
