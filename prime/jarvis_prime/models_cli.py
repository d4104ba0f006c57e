"""Prints the PRIME catalogue as this machine sees it.

bazel run //prime:models
bazel run //prime:models -- --json
"""

from __future__ import annotations

import argparse
import json
import sys

from jarvis_prime.catalogue import ModelInfo, list_models


def _size(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def table(models: list[ModelInfo]) -> str:
    header = ["name", "params", "modalities", "template", "context", "GiB f16/8bit/4bit", "default quant", "status"]
    rows = [
        [
            m.name,
            _size(m.parameters),
            "+".join(m.modalities),
            m.template,
            str(m.context_length),
            "/".join(_gib(m.memory_bytes[q]) for q in (None, "8bit", "4bit")),
            m.default_quantization or "none",
            "loadable" if m.loadable else "not loadable",
        ]
        for m in models
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = [f"- {m.name}: {m.status}" for m in models if not m.loadable]
    if reasons:
        lines += ["", "Why not loadable:", *reasons]
    return "\n".join(lines)


def as_json(models: list[ModelInfo]) -> str:
    out = []
    for m in models:
        d = {k: v for k, v in m.__dict__.items()}
        d["memory_bytes"] = {q or "none": v for q, v in m.memory_bytes.items()}
        d["modalities"] = list(m.modalities)
        out.append(d)
    return json.dumps(out, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List the PRIME models and whether this machine can load them.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    models = list_models()
    print(as_json(models) if args.json else table(models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
