"""Writes a PEP 427 wheel from a manifest of (path-in-wheel, source-file) pairs.

Invoked by the py_wheel rule in //tools:wheel.bzl; not meant to be run by hand.
"""

import argparse
import base64
import hashlib
import os
import zipfile


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_wheel(out, distribution, version, tag, summary, requires, manifest):
    dist = distribution.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    entries = []
    for dest, src in manifest:
        with open(src, "rb") as f:
            entries.append((dest, f.read()))
    metadata = [f"Metadata-Version: 2.1", f"Name: {distribution}", f"Version: {version}", f"Summary: {summary}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    purelib = "true" if tag.endswith("none-any") else "false"
    entries.append((f"{info}/METADATA", ("\n".join(metadata) + "\n").encode()))
    entries.append(
        (f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: ironcliw-py_wheel\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n".encode())
    )
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--distribution", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--summary", default="")
    p.add_argument("--requires", action="append", default=[])
    p.add_argument("--file", action="append", default=[], help="DEST=SRC")
    a = p.parse_args()
    manifest = sorted(tuple(item.split("=", 1)) for item in a.file)
    seen = set()
    for dest, _ in manifest:
        if dest in seen:
            raise SystemExit(f"wheel_builder: {dest} listed twice")
        seen.add(dest)
    build_wheel(a.out, a.distribution, a.version, a.tag, a.summary, a.requires, manifest)


if __name__ == "__main__":
    main()
