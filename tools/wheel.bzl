"""py_wheel: a wheel of a part's Python sources (and native modules) for use outside Bazel.

Files of the given deps whose workspace path starts with `strip_prefix` go into the wheel
with that prefix removed (reactor/reactor_core/x.py -> reactor_core/x.py); everything else
(other parts, third-party labels) stays out and is named in `requires` instead.
"""

def _py_wheel_impl(ctx):
    files = depset(transitive = [
        depset(transitive = [d[DefaultInfo].default_runfiles.files, d[DefaultInfo].files])
        for d in ctx.attr.deps
    ])
    args = ctx.actions.args()
    inputs = []
    for f in files.to_list():
        path = f.short_path
        if not path.startswith(ctx.attr.strip_prefix):
            continue
        dest = path[len(ctx.attr.strip_prefix):]
        if not dest.startswith(ctx.attr.package_dir + "/"):
            continue
        if not (dest.endswith(".py") or dest.endswith(".so") or dest.endswith(".html") or
                dest.endswith(".js") or dest.endswith(".css") or dest.endswith(".json")):
            continue
        if dest.endswith("_test.py") or dest.endswith("_test_util.py"):
            continue
        args.add("--file", dest + "=" + f.path)
        inputs.append(f)
    out = ctx.actions.declare_file("{}-{}-{}.whl".format(
        ctx.attr.distribution.replace("-", "_"),
        ctx.attr.version,
        ctx.attr.tag,
    ))
    args.add("--out", out)
    args.add("--distribution", ctx.attr.distribution)
    args.add("--version", ctx.attr.version)
    args.add("--tag", ctx.attr.tag)
    args.add("--summary", ctx.attr.summary)
    for r in ctx.attr.requires:
        args.add("--requires", r)
    ctx.actions.run(
        outputs = [out],
        inputs = inputs,
        executable = ctx.executable._builder,
        arguments = [args],
        mnemonic = "PyWheel",
        progress_message = "Building wheel " + out.short_path,
    )
    return [DefaultInfo(files = depset([out]))]

py_wheel = rule(
    implementation = _py_wheel_impl,
    attrs = {
        "deps": attr.label_list(mandatory = True),
        "distribution": attr.string(mandatory = True),
        "version": attr.string(mandatory = True),
        "package_dir": attr.string(mandatory = True, doc = "top-level import package, e.g. reactor_core"),
        "strip_prefix": attr.string(default = ""),
        "tag": attr.string(default = "py3-none-any"),
        "summary": attr.string(default = ""),
        "requires": attr.string_list(),
        "_builder": attr.label(default = "//tools:wheel_builder", executable = True, cfg = "exec"),
    },
)
