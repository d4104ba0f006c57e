"""MLForge throughput next to mlx.core (CPU) and plain numpy, as one table.

    bazel run //mlforge:bench
    bazel run //mlforge:bench -- --size=2048 --repeats=3

Quantize/dequantize rows report GB/s of float32 data (the input of quantize, the output
of dequantize) on a size x size matrix with group_size 64; best of --repeats runs.
Packing reports tokens/s on 1M sequences of random lengths 1..64 into rows of 1024.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np

import mlforge

GROUP_SIZE = 64


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up: page in buffers, build MLX graphs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_quantize(w: np.ndarray, bits: int):
    """MLX's affine formulas in plain numpy (power-of-two bits)."""
    rows, cols = w.shape
    g = w.reshape(rows, cols // GROUP_SIZE, GROUP_SIZE)
    n_bins = np.float32(2**bits - 1)
    w_max, w_min = g.max(-1), g.min(-1)
    neg = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, np.float32(1e-7))
    scale = np.where(neg, scale, -scale)
    edge = np.where(neg, w_min, w_max)
    q0 = np.rint(edge / scale)
    nz = q0 != 0
    scale = np.where(nz, edge / np.where(nz, q0, 1), scale).astype(np.float32)
    bias = np.where(nz, edge, 0).astype(np.float32)
    q = np.clip(np.rint((g - bias[..., None]) / scale[..., None]), 0, n_bins).astype(np.uint32)
    per_word = 32 // bits
    q = q.reshape(rows, -1, per_word) << (np.arange(per_word, dtype=np.uint32) * bits)
    return q.sum(-1, dtype=np.uint32), scale, bias


def numpy_dequantize(wq: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int):
    per_word = 32 // bits
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    q = ((wq[..., None] >> shifts) & np.uint32(2**bits - 1)).astype(np.float32)
    q = q.reshape(wq.shape[0], scales.shape[1], GROUP_SIZE)
    return (scales[..., None] * q + biases[..., None]).reshape(wq.shape[0], -1)


def numpy_greedy_pack(tokens: np.ndarray, lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """First-fit-decreasing with a linear scan of open rows, then slice copies."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    free: list[int] = []
    placement = np.empty((len(lengths), 2), np.int64)
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        row = next((r for r, c in enumerate(free) if c >= n), len(free))
        if row == len(free):
            free.append(seq_len)
        placement[i] = (row, seq_len - free[row])
        free[row] -= n
    out = np.zeros((len(free), seq_len), np.int32)
    for i, (row, off) in enumerate(placement):
        out[row, off : off + lengths[i]] = tokens[starts[i] : starts[i] + lengths[i]]
    return out


Row = tuple[str, str, str, str, str]


def gb_per_s(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f}"


def quantize_row(w: np.ndarray, w_mx: mx.array, bits: int, repeats: int) -> Row:
    same = all(
        np.array_equal(a, b)
        for a, b in zip(mlforge.quantize(w, GROUP_SIZE, bits), numpy_quantize(w, bits))
    )
    ours = best_seconds(lambda: mlforge.quantize(w, GROUP_SIZE, bits), repeats)
    theirs = best_seconds(
        lambda: mx.eval(mx.quantize(w_mx, group_size=GROUP_SIZE, bits=bits)), repeats
    )
    plain = best_seconds(lambda: numpy_quantize(w, bits), 1)
    return (
        f"quantize {bits}-bit",
        "GB/s",
        gb_per_s(w.nbytes, ours),
        gb_per_s(w.nbytes, theirs),
        gb_per_s(w.nbytes, plain) + ("" if same else " (differs!)"),
    )


def dequantize_row(w: np.ndarray, bits: int, repeats: int) -> Row:
    wq, scales, biases = mlforge.quantize(w, GROUP_SIZE, bits)
    q_mx = [mx.array(a) for a in (wq, scales, biases)]
    ours = best_seconds(lambda: mlforge.dequantize(wq, scales, biases, GROUP_SIZE, bits), repeats)
    theirs = best_seconds(
        lambda: mx.eval(mx.dequantize(*q_mx, group_size=GROUP_SIZE, bits=bits)), repeats
    )
    plain = best_seconds(lambda: numpy_dequantize(wq, scales, biases, bits), 1)
    return (
        f"dequantize {bits}-bit",
        "GB/s",
        gb_per_s(w.nbytes, ours),
        gb_per_s(w.nbytes, theirs),
        gb_per_s(w.nbytes, plain),
    )


def run(size: int, repeats: int) -> list[Row]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((size, size), dtype=np.float32)
    w_mx = mx.array(w)
    rows = [quantize_row(w, w_mx, bits, repeats) for bits in (4, 8)]
    rows += [dequantize_row(w, bits, repeats) for bits in (4, 8)]
    dst = np.empty_like(w)
    copy = best_seconds(lambda: np.copyto(dst, w), repeats)
    rows.append(("memcpy (np.copyto)", "GB/s", "-", "-", gb_per_s(w.nbytes, copy)))
    rows.append(pack_row(rng, repeats))
    return rows


def pack_row(rng: np.random.Generator, repeats: int) -> Row:
    seq_len = 1024
    lengths = rng.integers(1, 65, 1_000_000)
    tokens = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.int32)
    ours = best_seconds(lambda: mlforge.pack(tokens, lengths, seq_len), repeats)
    sub = lengths[:10_000]
    sub_tokens = tokens[: int(sub.sum())]
    plain = best_seconds(lambda: numpy_greedy_pack(sub_tokens, sub, seq_len), 1)
    return (
        "pack 1M seqs, len 1-64 (numpy: 10k)",
        "M tokens/s",
        f"{tokens.size / ours / 1e6:.1f}",
        "-",
        f"{sub_tokens.size / plain / 1e6:.2f}",
    )


def format_table(rows: list[Row]) -> list[str]:
    header = ("operation", "unit", "MLForge", "mlx.core (CPU)", "numpy")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Row) -> str:
        return "  ".join(
            c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )

    return [line(header), "-" * len(line(header))] + [line(r) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="matrix is size x size float32")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many timed runs")
    args = parser.parse_args()
    mx.set_default_device(mx.cpu)
    info = mlforge.runtime_info()
    rows = run(args.size, args.repeats)
    print(
        f"MLForge bench: {args.size}x{args.size} float32, group_size={GROUP_SIZE}, "
        f"isa={info['isa']}, threads={info['threads']}, best of {args.repeats}"
    )
    print("\n".join(format_table(rows)))


if __name__ == "__main__":
    main()
