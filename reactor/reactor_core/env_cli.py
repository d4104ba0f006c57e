"""Prints what this machine is and the training defaults it gets.

    bazel run //reactor:env              # table
    bazel run //reactor:env -- --json    # machine-readable
"""

import argparse
import sys

from reactor_core import env as env_lib


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    env = env_lib.detect()
    prof = env_lib.profile(env)
    print(env_lib.as_json(env, prof) if args.json else env_lib.report(env, prof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
