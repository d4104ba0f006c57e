"""MLForge throughput next to mlx.core (CPU) and plain numpy, as one table.

    bazel run //mlforge:bench
    bazel run //mlforge:bench -- --size=2048 --repeats=3
    bazel run //mlforge:bench -- --gemv          # decode GEMV: MLForge int8/int4 vs XLA
    bazel run //mlforge:bench -- --cache_attention  # slot KV cache attention vs XLA

Quantize/dequantize rows report GB/s of float32 data (the input of quantize, the output
of dequantize) on a size x size matrix with group_size 64; best of --repeats runs.
Packing reports tokens/s on 1M sequences of random lengths 1..64 into rows of 1024.

--gemv times y = x @ W for one activation row on SmolLM2-135M's shapes (in x out), as
jitted JAX: MLForge's FFI kernel on int8/int4 weights with float32 activations and with
activations quantized to int8 blocks (integer dots), the same int8 weights in the panel
layout (QuantizedLinear's decode path on AVX-512 VNNI), XLA's
dequantize + dot on the same weights, and XLA's float32 dot. GB/s counts the bytes
each one must read (int8: 1 per weight, int4: 1/2, float32: 4, plus scales), so equal
GB/s on int4 means 8x the float32 speed. Each call cycles through enough copies of the
weights (>= 48 MB) that they stream from memory, as in decode. Then a table of
microseconds per call for 1..64 rows shows where dequantize + dot catches up (the
crossover QuantizedLinear uses), and one of the int8-activation kernel on every shape at
1, 4, 16 and 64 rows (prefill chunks), in us per call and GMAC/s.

--cache_attention times jax_ops.cache_attention against a jitted XLA einsum over each
row's whole cache with a causal mask (SmolLM2-135M heads: H=9, KVH=3, D=64; N=16 slots of
S=4096): microseconds per call for decode (T=1) and two prefill chunks (B=1), at used
lengths 128..4096. The kernel reads only the used keys; the einsum reads all S. Decode
at B=1 and B=4 is timed again on float16 caches (half the bytes; "vs f32" is the float32
kernel's time over the float16 one), the einsum on the same float16 caches.
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


GEMV_SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152)]  # (in, out)
GEMV_GROUP = {8: None, 4: 64}  # as Prime's "8bit" / "4bit" (int8 per channel)
STREAM_BYTES = 48 << 20
PREFILL_ROWS = (1, 4, 16, 64)  # Prime prefills in chunks of 4, 16 and 64 rows


def _gemv_fns(n_in: int, n_out: int, bits: int | None, rows: int):
    """({method: jitted fn}, its args, bytes read per matmul, copies) for one shape.

    Methods: "f32" (XLA float32 dot) without bits; else "float x" and "int8 x" (MLForge's
    kernel with float or int8-block activations) and "xla" (dequantize + dot)."""
    import jax
    import jax.numpy as jnp

    from mlforge import jax_ops

    rng = np.random.default_rng(0)
    w = rng.standard_normal((n_in, n_out), dtype=np.float32) * 0.05
    x = jnp.asarray(rng.standard_normal((rows, n_in), dtype=np.float32))
    if bits is None:
        nbytes = w.nbytes
        copies = max(1, min(64, -(-STREAM_BYTES // nbytes)))
        ws = [jnp.asarray(w + np.float32(k)) for k in range(copies)]
        return {"f32": jax.jit(lambda x, ws: [x @ w for w in ws])}, (x, ws), nbytes, copies
    group = GEMV_GROUP[bits] or n_in
    wq, scales = jax_ops.quantize_weight(w, bits=bits, group_size=group)
    nbytes = wq.nbytes + scales.nbytes
    copies = max(1, min(256, -(-STREAM_BYTES // nbytes)))
    qs = [(wq + 0, scales * (1 + k)) for k in range(copies)]  # distinct buffers

    def ours(activations):
        return jax.jit(
            lambda x, qs: [
                jax_ops.qmatmul(x, q, s, bits=bits, group_size=group, activations=activations)
                for q, s in qs
            ]
        )

    def xla(x, qs):
        return [x @ jax_ops.dequantize_weight(q, s, bits=bits, group_size=group).T for q, s in qs]

    fns = {"float x": ours("float"), "int8 x": ours("int8"), "xla": jax.jit(xla)}
    if bits == 8:  # the panel layout (int8 x): the same weights, packed once
        ps = [jax_ops.pack_panels(q, s) for q, s in qs]
        panel = jax.jit(
            lambda x, ps: [jax_ops.qmatmul_panel(x, p, s, out_features=n_out, group_size=group) for p, s in ps]
        )
        fns["panel"] = lambda x, qs: panel(x, ps)
    return fns, (x, qs), nbytes, copies


def _per_call(fn, args, copies: int, repeats: int) -> float:
    import jax

    return best_seconds(lambda: jax.block_until_ready(fn(*args)), repeats) / copies


def gemv_rows(repeats: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for n_in, n_out in GEMV_SHAPES:
        fns, args, nbytes, copies = _gemv_fns(n_in, n_out, None, 1)
        f32 = gb_per_s(nbytes, _per_call(fns["f32"], args, copies, repeats))
        for bits in (8, 4):
            fns, args, nbytes, copies = _gemv_fns(n_in, n_out, bits, 1)
            t = {k: _per_call(fn, args, copies, repeats) for k, fn in fns.items()}
            rows.append(
                (
                    f"{n_in}x{n_out}",
                    f"int{bits}",
                    gb_per_s(nbytes, t["float x"]),
                    f"{t['float x'] * 1e6:.1f}",
                    gb_per_s(nbytes, t["int8 x"]),
                    f"{t['int8 x'] * 1e6:.1f}",
                    f"{t['float x'] / t['int8 x']:.2f}x",
                    gb_per_s(nbytes, t["panel"]) if "panel" in t else "-",
                    f"{t['panel'] * 1e6:.1f}" if "panel" in t else "-",
                    gb_per_s(nbytes, t["xla"]),
                    f32,
                )
            )
    return rows


def crossover_rows(repeats: int, shape=(576, 1536)) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        cells = []
        for bits in (8, 4):
            fns, args, _, copies = _gemv_fns(*shape, bits, m)
            cells += [_per_call(fns[k], args, copies, repeats) for k in ("float x", "int8 x", "xla")]
        rows.append((str(m), *(f"{t * 1e6:.1f}" for t in cells)))
    return rows


def prefill_rows(repeats: int) -> list[tuple[str, ...]]:
    """int8-activation us per call and GMAC/s on each shape at rows 1..64 (prefill chunks)."""
    rows: list[tuple[str, ...]] = []
    for n_in, n_out in GEMV_SHAPES:
        for bits, method, label in ((8, "int8 x", "int8"), (8, "panel", "int8 panel"), (4, "int8 x", "int4")):
            cells = []
            for m in PREFILL_ROWS:
                fns, args, _, copies = _gemv_fns(n_in, n_out, bits, m)
                t = _per_call(fns[method], args, copies, repeats)
                cells += [f"{t * 1e6:.1f}", f"{m * n_in * n_out / t / 1e9:.1f}"]
            rows.append((f"{n_in}x{n_out}", label, *cells))
    return rows


def format_columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r) -> str:
        return "  ".join(
            c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )

    return [line(header), "-" * len(line(header))] + [line(r) for r in rows]


def main_gemv(repeats: int) -> None:
    import jax

    info = mlforge.runtime_info()
    print(
        f"GEMV, 1 row: GB/s of weight bytes read (higher is better) and us per call; MLForge "
        f"with float32 activations and with int8 blocks of 32 (int8 kernel "
        f"{info['int8_kernel']}); isa={info['isa']}, threads={info['threads']}, "
        f"jax {jax.__version__}, best of {repeats}"
    )
    header = (
        "in x out",
        "W",
        "float x GB/s",
        "float x us",
        "int8 x GB/s",
        "int8 x us",
        "int8 x speedup",
        "panel GB/s",
        "panel us",
        "XLA deq+dot GB/s",
        "XLA f32 dot GB/s",
    )
    print("\n".join(format_columns(header, gemv_rows(repeats))))
    print("\nus per call on 576x1536 by activation rows (lower is better)")
    header = ("rows", *(f"int{b} {k}" for b in (8, 4) for k in ("float x", "int8 x", "XLA deq+dot")))
    print("\n".join(format_columns(header, crossover_rows(repeats))))
    print("\nint8 x (integer dots) by activation rows: us per call and GMAC/s")
    header = ("in x out", "W", *(f"{m} rows {u}" for m in PREFILL_ROWS for u in ("us", "GMAC/s")))
    print("\n".join(format_columns(header, prefill_rows(repeats))))


CACHE_SLOTS, CACHE_LEN, CACHE_HEADS, CACHE_KV_HEADS, CACHE_HEAD_DIM = 16, 4096, 9, 3, 64


def _masked_einsum_attention(q, k_cache, v_cache, slots, q_positions):
    """The XLA baseline: attention over each row's whole cache, keys past a query masked."""
    import jax
    import jax.numpy as jnp

    b, t, h, d = q.shape
    _, s, kvh, _ = k_cache.shape
    k, v = k_cache[slots], v_cache[slots]  # (B, S, KVH, D)
    qg = q.reshape(b, t, kvh, h // kvh, d)  # (B, T, KVH, G, D)
    scores = jnp.einsum("btjgd,bsjd->btjgs", qg, k) * d**-0.5  # (B, T, KVH, G, S)
    mask = jnp.arange(s)[None, None, :] <= q_positions[:, :, None]  # (B, T, S)
    scores = jnp.where(mask[:, :, None, None, :], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("btjgs,bsjd->btjgd", probs, v).reshape(b, t, h, d)
    return jnp.where((q_positions >= 0)[:, :, None, None], out, 0.0)


def cache_attention_rows(repeats: int) -> list[tuple[str, ...]]:
    import jax

    from mlforge import jax_ops

    rng = np.random.default_rng(0)
    shape = (CACHE_SLOTS, CACHE_LEN, CACHE_KV_HEADS, CACHE_HEAD_DIM)
    k32 = rng.standard_normal(shape, dtype=np.float32)
    v32 = rng.standard_normal(shape, dtype=np.float32)
    caches = {
        dtype: (jax.device_put(k32.astype(dtype)), jax.device_put(v32.astype(dtype)))
        for dtype in ("float32", "float16")
    }
    ours, xla = jax.jit(jax_ops.cache_attention), jax.jit(_masked_einsum_attention)
    cases = [(b, 1, used) for b in (1, 4, 16) for used in (128, 1024, 4096)]
    cases += [(1, t, used) for t in (64, 256) for used in (1024, 4096)]
    rows = []
    for b, t, used in cases:
        q = rng.standard_normal((b, t, CACHE_HEADS, CACHE_HEAD_DIM), dtype=np.float32)
        slots = (np.arange(b, dtype=np.int32) * 5) % CACHE_SLOTS
        pos = np.broadcast_to(np.arange(used - t, used, dtype=np.int32), (b, t)).copy()
        dtypes = ("float32", "float16") if t == 1 and b in (1, 4) else ("float32",)
        t_f32 = None
        for dtype in dtypes:
            args = (q, *caches[dtype], slots, pos)
            diff = float(np.abs(np.asarray(ours(*args)) - np.asarray(xla(*args))).max())
            t_ours = best_seconds(lambda: jax.block_until_ready(ours(*args)), repeats)
            t_xla = best_seconds(lambda: jax.block_until_ready(xla(*args)), repeats)
            t_f32 = t_f32 or t_ours
            rows.append(
                (
                    "decode" if t == 1 else f"chunk T={t}",
                    str(b),
                    str(used),
                    dtype,
                    f"{t_ours * 1e6:.0f}",
                    f"{t_xla * 1e6:.0f}",
                    f"{t_xla / t_ours:.1f}x",
                    "" if dtype == "float32" else f"{t_f32 / t_ours:.2f}x",
                    f"{diff:.1e}",
                )
            )
    return rows


def main_cache_attention(repeats: int) -> None:
    import jax

    info = mlforge.runtime_info()
    print(
        f"cache_attention, us per call (lower is better): H={CACHE_HEADS}, "
        f"KVH={CACHE_KV_HEADS}, D={CACHE_HEAD_DIM}, N={CACHE_SLOTS}, S={CACHE_LEN}; "
        f"isa={info['isa']}, threads={info['threads']}, jax {jax.__version__}, best of {repeats}"
    )
    header = (
        "step",
        "B",
        "used",
        "cache",
        "MLForge",
        "XLA masked einsum",
        "speedup",
        "vs f32",
        "max |diff|",
    )
    print("\n".join(format_columns(header, cache_attention_rows(repeats))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="matrix is size x size float32")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many timed runs")
    parser.add_argument("--gemv", action="store_true", help="decode GEMV table (JAX) instead")
    parser.add_argument(
        "--cache_attention", action="store_true", help="KV cache attention table (JAX) instead"
    )
    args = parser.parse_args()
    if args.gemv:
        main_gemv(args.repeats)
        return
    if args.cache_attention:
        main_cache_attention(args.repeats)
        return
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
