#!/bin/sh
echo "bazel coverage is not set up in this workspace (offline stand-in for remote_coverage_tools)" >&2
exit 1
