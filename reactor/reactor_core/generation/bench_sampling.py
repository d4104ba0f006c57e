"""Sampler micro-benchmark: microseconds per call of argmax, `sample`, and a full-vocabulary sort (the old top-p).

    bazel run //reactor:bench_sampling
    bazel run //reactor:bench_sampling -- --batches=1,8 --vocab=49152 --candidates=32,64,128

Settings are Jarvis's defaults (temperature 0.7, top_p 0.95, repetition penalty 1.1, top_k
and min_p off) on two kinds of logits: "peaked", Zipf-like as a chat model's usually are
(the candidates hold 95% of the mass: fast path), and "flat", Gaussian noise (they do not:
the full-vocabulary fallback runs). Printed, not asserted: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from reactor_core.generation.sampling import CANDIDATES, SamplingArrays, row_uniforms, sample

JARVIS = {"temperature": 0.7, "top_k": 0, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.1}


def make_logits(kind: str, batch: int, vocab: int, seed: int = 0) -> np.ndarray:
    """(B, V) float32 logits; "peaked" ranks tokens Zipf-like, "flat" is standard normal."""
    rng = np.random.default_rng(seed)
    if kind == "flat":
        return rng.normal(size=(batch, vocab)).astype(np.float32)
    ranks = np.stack([rng.permutation(vocab) for _ in range(batch)]) + 1  # (B, V)
    return (-1.4 * np.log(ranks) + 0.1 * rng.normal(size=(batch, vocab))).astype(np.float32)


def time_us(fn, *args, repeats: int) -> float:
    """Median microseconds per call of a jitted fn, after a compiling call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def full_sort_top_p(logits, uniforms, top_p=0.95, temperature=0.7):
    """The approach `sample` replaced (top-p over a sort of the whole vocabulary), as a baseline."""
    ordered = -jnp.sort(-logits / temperature, axis=-1)  # (B, V)
    probs = jax.nn.softmax(ordered, axis=-1)
    cdf = jnp.cumsum(probs, axis=-1)
    kept = jnp.where(cdf - probs < top_p, probs, 0.0)
    index = jnp.sum(jnp.cumsum(kept, axis=-1) <= uniforms[:, None] * kept.sum(-1, keepdims=True), axis=-1)
    return jnp.take_along_axis(ordered, index[:, None], axis=-1)


def bench(batch: int, vocab: int, candidates: list[int], repeats: int) -> list[tuple[str, float]]:
    """(label, microseconds per call) rows for one batch size."""
    rng = np.random.default_rng(1)
    seen = np.zeros((batch, vocab), bool)
    for row in seen:  # a few hundred tokens of history per conversation
        row[rng.integers(0, vocab, 300)] = True
    params = SamplingArrays.rows([JARVIS] * batch)
    uniforms = row_uniforms(np.arange(batch, dtype=np.uint32), np.zeros(batch, np.int32))
    old = jax.jit(full_sort_top_p)
    argmax = jax.jit(lambda x: jnp.argmax(x, axis=-1))
    rows = []
    for kind in ("peaked", "flat"):
        logits = jnp.asarray(make_logits(kind, batch, vocab))
        rows.append((f"{kind:6} argmax", time_us(argmax, logits, repeats=repeats)))
        for k in candidates:
            new = jax.jit(functools.partial(sample, candidates=k))
            rows.append((f"{kind:6} sample K={k}", time_us(new, logits, params, seen, uniforms, repeats=repeats)))
        rows.append((f"{kind:6} full-vocab sort", time_us(old, logits, uniforms, repeats=repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--candidates", default=str(CANDIDATES), help="comma-separated fast-path widths")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}, vocab {args.vocab}, settings {JARVIS}")
    for batch in (int(b) for b in args.batches.split(",")):
        for label, us in bench(batch, args.vocab, [int(k) for k in args.candidates.split(",")], args.repeats):
            print(f"B={batch:<3} {label:24} {us:10.1f} us/call")


if __name__ == "__main__":
    main()
