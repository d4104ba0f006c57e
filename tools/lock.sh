#!/usr/bin/env bash
# Regenerates requirements_lock.txt from requirements.in (hash-pinned, universal:
# Linux and macOS markers). Usage: bash tools/lock.sh   (needs `pip install uv`)
# torch==2.13.0+cpu comes from a local wheel directory (PIP_FIND_LINKS); pass another
# with TORCH_WHEELS=/path if yours lives elsewhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv pip compile --universal --python-version 3.11 --generate-hashes \
  --find-links "${TORCH_WHEELS:-${PIP_FIND_LINKS:-/opt/wheels}}" \
  --index-strategy unsafe-best-match \
  requirements.in -o requirements_lock.txt
