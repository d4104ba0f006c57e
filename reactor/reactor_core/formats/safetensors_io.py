"""Safetensors read/write with numpy (bfloat16 via ml_dtypes), memory-mapped and validated.

Written from the format spec (8-byte little-endian header size, JSON header, raw data),
so truncated or inconsistent files fail with an error naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
    """A safetensors file is missing, truncated or inconsistent."""


def read_header(path: str) -> tuple[dict, int]:
    """Returns (header dict without __metadata__, offset of the data section)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise SafetensorsError(f"{path}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", raw)
            if 8 + n > size:
                raise SafetensorsError(f"{path}: truncated safetensors file (header of {n} bytes, file is {size})")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise SafetensorsError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise SafetensorsError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    data_start = 8 + n
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        expected = int(np.prod(info["shape"], dtype=np.int64)) * _DTYPES[info["dtype"]].itemsize
        if end - begin != expected:
            raise SafetensorsError(f"{path}: tensor {name!r} has {end - begin} bytes, shape needs {expected}")
        if data_start + end > size:
            raise SafetensorsError(
                f"{path}: truncated safetensors file: tensor {name!r} ends at byte {data_start + end}, "
                f"file has {size}"
            )
    return header, data_start


def iter_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (name, array) from a memory map: nothing is read until an array is used."""
    header, data_start = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arr = mm[data_start + begin : data_start + end].view(_DTYPES[info["dtype"]])
        yield name, arr.reshape(info["shape"])


def load(path: str) -> dict[str, np.ndarray]:
    return dict(iter_tensors(path))


def save(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` to `path` (written to a temp file, then renamed)."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    arrays = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _NAMES:
            raise ValueError(f"cannot save tensor {name!r} with dtype {arr.dtype} to {path}")
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data section starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes(order="C") if arr.ndim == 0 else memoryview(arr.reshape(-1).view(np.uint8)))
    os.replace(tmp, path)
