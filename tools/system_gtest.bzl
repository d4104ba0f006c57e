"""system_gtest: GoogleTest from the system's packages (Debian: libgtest-dev)."""

_LIB_DIRS = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/opt/homebrew/lib",
]

_INCLUDE_DIRS = ["/usr/include", "/usr/local/include", "/opt/homebrew/include"]

def _find(rctx, dirs, rel):
    for d in dirs:
        p = rctx.path(d + "/" + rel)
        if p.exists:
            return d
    return None

def _system_gtest_impl(rctx):
    libdir = _find(rctx, _LIB_DIRS, "libgtest.a")
    incdir = _find(rctx, _INCLUDE_DIRS, "gtest/gtest.h")
    if libdir == None or incdir == None:
        fail("GoogleTest not found. Install it: `apt-get install -y libgtest-dev` (Debian/Ubuntu) " +
             "or `brew install googletest` (macOS). Searched {} and {}.".format(_LIB_DIRS, _INCLUDE_DIRS))
    rctx.symlink(incdir + "/gtest", "include/gtest")
    rctx.symlink(libdir + "/libgtest.a", "lib/libgtest.a")
    rctx.symlink(libdir + "/libgtest_main.a", "lib/libgtest_main.a")
    rctx.file("BUILD.bazel", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "gtest",
    hdrs = glob(["include/gtest/**/*.h"]),
    includes = ["include"],
    srcs = ["lib/libgtest.a"],
    linkopts = ["-pthread"],
)

cc_library(
    name = "gtest_main",
    srcs = ["lib/libgtest_main.a"],
    deps = [":gtest"],
)
""")

system_gtest = repository_rule(implementation = _system_gtest_impl, local = True)
