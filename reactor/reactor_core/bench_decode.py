"""Decode benchmark: reactor's JAX path vs transformers (PyTorch) on SmolLM2-135M-Instruct.

    bazel run //reactor:bench_decode
    bazel run //reactor:bench_decode -- --new_tokens=64 --dtypes=float32

Same converted weights, same chat prompt, greedy, a fixed number of new tokens (EOS
ignored), float32 and bfloat16. Prints prompt (prefill) tokens/s, time to first token and
decode tokens/s side by side, the speed-up, and the memory-bandwidth bound: weight bytes
read per decoded token against the measured copy bandwidth of this machine. A second table
times prefill alone on a long prompt (`--long_prompt` tokens, 0 = skip), where attention
and padding matter more than on the short chat prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from reactor_core.formats.pretrained import load_pretrained
from reactor_core.generation.generate import Generator

PROMPT = "Explain in a few paragraphs how a steam engine works and why it mattered."
# transformers float32 decode measured by the peer team on the 2-core CI box; the goal is 1.5x.
PEER_FLOAT32_DECODE_TPS = 15.8


@dataclasses.dataclass
class Row:
    engine: str
    dtype: str
    prompt_tokens: int
    prefill_tps: float
    ttft_s: float
    decode_tps: float


REPEATS = 2  # short-prompt runs per engine; each figure is the best of them


def copy_bandwidth_gbs(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Read+write bandwidth of a large numpy copy, in GB/s (best of `repeats`)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best / 1e9


def weight_bytes_per_token(model) -> int:
    """Bytes of weights a decode step reads: every matrix once (the tied embedding as LM head)."""
    import jax
    from flax import nnx

    return sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def bench_jax(bundle, ids: list[int], new_tokens: int, dtype: str) -> Row:
    gen = Generator(bundle.model)
    for i, _ in enumerate(gen.stream([ids], max_new_tokens=new_tokens, stop_ids=[])):
        if i == 2:
            break  # both programs (prefill, decode) are compiled for this shape now
    # Best of REPEATS runs, as for transformers below (the machine may be shared).
    runs = [gen.generate([ids], max_new_tokens=new_tokens, stop_ids=[]).stats for _ in range(REPEATS)]
    ttft = min(s.time_to_first_token_s for s in runs)
    return Row("reactor JAX", dtype, len(ids), len(ids) / ttft, ttft, max(s.decode_tokens_per_s for s in runs))


def bench_torch(path: str, ids: list[int], new_tokens: int, dtype: str, threads: int | None) -> Row:
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    inputs = torch.tensor([ids])

    def run(n):
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - start

    run(4)  # warm-up
    ttft = min(run(1) for _ in range(REPEATS))
    total = min(run(new_tokens) for _ in range(REPEATS))
    return Row("transformers", dtype, len(ids), len(ids) / ttft, ttft, (new_tokens - 1) / (total - ttft))


def long_prefill(bundle, ids: list[int], dtype: str, threads: int | None, repeats: int = 3) -> tuple[float, float]:
    """(transformers, reactor JAX) prompt tokens/s over one long prompt: best time to first token."""
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(bundle.path, dtype=getattr(torch, dtype)).eval()
    inputs = torch.tensor([ids])
    best_torch = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(inputs, max_new_tokens=1, do_sample=False, pad_token_id=0)
        best_torch = min(best_torch, time.perf_counter() - start)
    del model
    gen = Generator(bundle.model)
    gen.generate([ids], max_new_tokens=1, stop_ids=[])  # compiles
    best_jax = min(gen.generate([ids], max_new_tokens=1, stop_ids=[]).stats.prefill_s for _ in range(repeats))
    return len(ids) / best_torch, len(ids) / best_jax


def run(
    new_tokens: int = 128,
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),
    torch_threads: int | None = None,
    long_prompt: int = 512,
) -> list[Row]:
    rows = []
    long_rows = []
    bandwidth = copy_bandwidth_gbs()
    bounds = {}
    for dtype in dtypes:
        bundle = load_pretrained("prime-135m-chat", dtype=dtype)
        ids = bundle.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        weight_bytes = weight_bytes_per_token(bundle.model)
        bounds[dtype] = (weight_bytes, bandwidth * 1e9 / weight_bytes)
        rows.append(bench_torch(bundle.path, ids, new_tokens, dtype, torch_threads))
        rows.append(bench_jax(bundle, ids, new_tokens, dtype))
        if long_prompt:
            text = " ".join([PROMPT] * (long_prompt // 8))
            long_ids = list(bundle.tokenizer(text, add_special_tokens=False)["input_ids"])[:long_prompt]
            long_rows.append((dtype, len(long_ids), *long_prefill(bundle, long_ids, dtype, torch_threads)))
        del bundle
    print(f"\nSmolLM2-135M-Instruct, greedy, {new_tokens} new tokens, prompt {rows[0].prompt_tokens} tokens\n")
    print("| engine | dtype | prefill tok/s | TTFT ms | decode tok/s | decode vs transformers |")
    print("|---|---|---:|---:|---:|---:|")
    for i, r in enumerate(rows):
        base = rows[i - i % 2].decode_tps
        print(f"| {r.engine} | {r.dtype} | {r.prefill_tps:.0f} | {r.ttft_s * 1e3:.0f} | {r.decode_tps:.1f} | {r.decode_tps / base:.2f}x |")
    ours = next((r for r in rows if r.engine == "reactor JAX" and r.dtype == "float32"), None)
    if ours:
        print(
            f"\nfloat32 decode vs the peer's transformers {PEER_FLOAT32_DECODE_TPS} tok/s: "
            f"{ours.decode_tps / PEER_FLOAT32_DECODE_TPS:.2f}x (goal 1.5x)"
        )
    if long_rows:
        print("\n| prefill only | dtype | prompt tokens | transformers tok/s | reactor JAX tok/s | JAX vs transformers |")
        print("|---|---|---:|---:|---:|---:|")
        for dtype, n, torch_tps, jax_tps in long_rows:
            print(f"| long prompt | {dtype} | {n} | {torch_tps:.0f} | {jax_tps:.0f} | {jax_tps / torch_tps:.2f}x |")
    print(f"copy bandwidth (read+write): {bandwidth:.1f} GB/s")
    for dtype, (nbytes, bound) in bounds.items():
        jax_row = next(r for r in rows if r.engine == "reactor JAX" and r.dtype == dtype)
        print(
            f"{dtype}: {nbytes / 1e6:.0f} MB of weights per token -> bound {bound:.1f} tok/s; "
            f"JAX reaches {jax_row.decode_tps / bound:.0%} of it"
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--torch_threads", type=int, default=None, help="default: torch's own choice")
    parser.add_argument("--long_prompt", type=int, default=512, help="prefill-only prompt length; 0 = skip")
    args = parser.parse_args()
    run(args.new_tokens, tuple(args.dtypes.split(",")), args.torch_threads, args.long_prompt)


if __name__ == "__main__":
    main()
