"""LoRA training throughput and peak memory: reactor's train step vs Hugging Face PEFT + PyTorch.

    bazel run //reactor:bench_train
    bazel run //reactor:bench_train -- --steps=8 --dtypes=float32 --runs=ours,peft

SmolLM2-135M (prime-135m-chat weights), LoRA r=16 alpha=32 on q, k, v, o, AdamW with
global-norm clipping, the same random (batch x seq_len) token batch, loss on every
token. Each run is a fresh subprocess so its peak RSS is its own; the first `warmup`
steps (compilation for JAX) are not timed. Also prints the QLoRA memory table for the
llama-2-7b preset from jax.eval_shape. A table, not a timed test.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 5, "Timed steps per run.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (JAX compiles in the first).")
flags.DEFINE_integer("batch_size", 4, "Rows per step.")
flags.DEFINE_integer("seq_len", 256, "Tokens per row.")
flags.DEFINE_integer("rank", 16, "LoRA rank.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes to run.")
flags.DEFINE_list(
    "runs", ["ours", "peft", "qlora"], "ours (reactor LoRA), peft (HF PEFT + torch), qlora (reactor, NF4 base)."
)
flags.DEFINE_string("model", "prime-135m-chat", "Model whose weights to train.")
flags.DEFINE_integer(
    "rounds", 3, "Run every measurement this many times, alternating; keep each one's best, print each round's ratio."
)
flags.DEFINE_bool("memory_table", True, "Also print the llama-2-7b QLoRA memory table.")
flags.DEFINE_bool(
    "gemm_check", True, "First time one float32 GEMM of the step's shape in XLA and in torch (the step is mostly GEMMs)."
)
flags.DEFINE_string("worker", "", "Internal: run one measurement and print it as JSON.")
flags.DEFINE_string("dtype", "float32", "Internal: the worker's dtype.")

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _time_steps(step, warmup: int, steps: int, sync) -> tuple[float, float]:
    """(seconds of the first warmup step, median seconds of the timed steps)."""
    t0 = time.perf_counter()
    sync(step())
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        sync(step())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sync(step())  # per-step sync: a median resists other load on a shared machine
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def worker_ours(dtype: str, quant: str) -> dict:
    import jax
    import numpy as np

    from reactor_core.train import base_model, objectives
    from reactor_core.train import state as state_lib
    from reactor_core.train.config import TrainingConfig
    from reactor_core.train.optim import build_optimizer
    from reactor_core.train.step import make_train_step

    config = TrainingConfig(
        model_name=FLAGS.model,
        dtype=dtype,
        lora_rank=FLAGS.rank,
        lora_alpha=2.0 * FLAGS.rank,
        lora_targets=TARGETS,
        quantize=quant,
    )
    model, _, _ = base_model.load_base(config.model, full_finetune=False, tokenizer=False, quant_config=config.quant)
    base_model.prepare(model, config.lora, config.quant)
    vocab = model.config.vocab_size
    split, params, rng = state_lib.split_model(model, use_lora=True)
    del model
    tx, schedule = build_optimizer(config.optim, 1000)
    state = state_lib.init_state(params, rng, tx)
    step_fn = make_train_step(split, objectives.sft_objective, tx, schedule)
    b, t = FLAGS.batch_size, FLAGS.seq_len
    tokens = np.random.default_rng(0).integers(0, vocab, (1, b, t), dtype=np.int32)
    weights = np.ones((1, b, t), np.float32)
    weights[..., -1] = 0
    batch = jax.device_put(
        {
            "tokens": tokens,
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (1, b, t)).copy(),
            "segment_ids": np.ones((1, b, t), np.int32),
            "targets": np.roll(tokens, -1, axis=-1),
            "weights": weights,
        }
    )
    holder = {"state": state}

    def step():
        holder["state"], metrics = step_fn(holder["state"], split.frozen, None, batch)
        return metrics["loss"]

    first, per_step = _time_steps(step, FLAGS.warmup, FLAGS.steps, lambda x: x.block_until_ready())
    return {"first_step_s": first, "step_s": per_step, "loss": float(step())}


def worker_peft(dtype: str) -> dict:
    import peft
    import torch
    import transformers

    from reactor_core.formats.pretrained import hf_dir_for

    torch.set_num_threads(os.cpu_count() or 1)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir_for(FLAGS.model), dtype=torch_dtype)
    lora = peft.LoraConfig(
        r=FLAGS.rank, lora_alpha=2 * FLAGS.rank, lora_dropout=0.0, target_modules=list(TARGETS), task_type="CAUSAL_LM"
    )
    model = peft.get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)
    tokens = torch.randint(
        0, model.config.vocab_size, (FLAGS.batch_size, FLAGS.seq_len), generator=torch.Generator().manual_seed(0)
    )

    def step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    first, per_step = _time_steps(step, FLAGS.warmup, FLAGS.steps, lambda x: None)
    return {"first_step_s": first, "step_s": per_step, "loss": float(step())}


# The LoRA step's most frequent GEMM: (batch x seq_len) x hidden @ hidden x intermediate.
GEMM_SHAPE = (1024, 576, 1536)


def worker_gemm() -> dict:
    """GFLOP/s of one float32 GEMM in XLA and in torch, best of 10 each (both on all cores)."""
    import jax
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    xla = jax.jit(lambda x, y: x @ y)
    ja, jb, ta, tb = jax.device_put(a), jax.device_put(b), torch.from_numpy(a), torch.from_numpy(b)

    def best(call) -> float:
        call()
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        return 2 * m * k * n / min(times) / 1e9

    return {
        "xla_gflops": best(lambda: xla(ja, jb).block_until_ready()),
        "torch_gflops": best(lambda: torch.matmul(ta, tb)),
    }


def cpu_summary() -> str:
    """'AMD EPYC ..., avx512f avx512_bf16' from /proc/cpuinfo (Linux), else the platform."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {' '.join(simd) or 'no AVX2'}"


def run_worker() -> None:
    kind, dtype = FLAGS.worker, FLAGS.dtype
    if kind == "gemm":
        print("RESULT " + json.dumps(worker_gemm()), flush=True)
        return
    if kind == "peft":
        out = worker_peft(dtype)
    else:
        out = worker_ours(dtype, "nf4" if kind == "qlora" else "none")
    out["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def launch(kind: str, dtype: str) -> dict:
    argv = [sys.executable, "-m", "reactor_core.bench_train", f"--worker={kind}", f"--dtype={dtype}"]
    for name in ("steps", "warmup", "batch_size", "seq_len", "rank", "model"):
        argv.append(f"--{name}={getattr(FLAGS, name)}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{kind}/{dtype} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv) -> None:
    del argv
    if FLAGS.worker:
        run_worker()
        return
    tokens = FLAGS.batch_size * FLAGS.seq_len
    print(
        f"LoRA r={FLAGS.rank} on {','.join(TARGETS)} | {FLAGS.model} | batch {FLAGS.batch_size} x {FLAGS.seq_len} "
        f"| median of {FLAGS.steps} steps after {FLAGS.warmup}, best of {FLAGS.rounds} round(s) | {os.cpu_count()} CPUs",
        flush=True,
    )
    if FLAGS.gemm_check:
        g = launch("gemm", "float32")
        m, k, n = GEMM_SHAPE
        print(
            f"CPU: {cpu_summary()}. float32 GEMM {m}x{k}x{n}: XLA {g['xla_gflops']:.0f} GFLOP/s, "
            f"torch {g['torch_gflops']:.0f} GFLOP/s (the step is mostly GEMMs: the ratio below follows these)",
            flush=True,
        )
    results = {}
    paired = {}  # (kind, dtype) -> per-round ratios to the PEFT run next to it in time
    for _ in range(FLAGS.rounds):
        for dtype in FLAGS.dtypes:
            this_round = {}
            for kind in FLAGS.runs:
                if kind == "qlora" and dtype != FLAGS.dtypes[0]:
                    continue
                r = launch(kind, dtype)
                r["tokens_per_s"] = tokens / r["step_s"]
                this_round[kind] = r["tokens_per_s"]
                print(f"  {kind:<6} {dtype:<9} {r['tokens_per_s']:8.1f} tok/s", flush=True)
                best = results.get((kind, dtype))
                if best is None or r["step_s"] < best["step_s"]:
                    results[(kind, dtype)] = r
            if "peft" in this_round:
                for kind, tps in this_round.items():
                    if kind != "peft":
                        paired.setdefault((kind, dtype), []).append(tps / this_round["peft"])
    names = {"ours": "reactor LoRA", "peft": "HF PEFT + torch", "qlora": "reactor QLoRA (NF4)"}
    print()
    print(
        f"{'implementation':<22}{'dtype':<10}{'tokens/s':>10}{'s/step':>9}{'first step s':>14}{'peak RSS MB':>13}{'vs PEFT':>9}"
    )
    for (kind, dtype), r in results.items():
        ref = results.get(("peft", dtype))
        speedup = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        print(
            f"{names[kind]:<22}{dtype:<10}{r['tokens_per_s']:>10.1f}{r['step_s']:>9.2f}{r['first_step_s']:>14.1f}"
            f"{r['peak_rss_mb']:>13.0f}{speedup:>9}"
        )
    if paired:
        # This machine's speed drifts by +-25% over minutes (other tenants); a ratio taken
        # between runs that ran back to back cancels most of it, so the goal is judged on
        # the median of those per-round ratios.
        print()
        print("Per-round ratio to the PEFT run beside it (median decides the goal):")
        for (kind, dtype), ratios in paired.items():
            median = statistics.median(ratios)
            line = f"  {names[kind]} {dtype}: " + ", ".join(f"{x:.2f}x" for x in ratios) + f" -> median {median:.2f}x"
            if kind == "ours" and dtype == "float32":
                line += f" (goal >= 1.3x): {'MET' if median >= 1.3 else 'MISSED'}"
            print(line)
    if FLAGS.memory_table:
        from reactor_core.lora import memory
        from reactor_core.models.config import LlamaConfig
        from reactor_core.train.config import LoraConfig, QuantConfig

        cfg = LlamaConfig.preset("llama-2-7b")
        lora = LoraConfig(rank=FLAGS.rank)
        rows = {
            "llama-2-7b bf16 + LoRA": memory.training_memory(cfg, lora, QuantConfig(mode="none")),
            "llama-2-7b int8 + LoRA": memory.training_memory(cfg, lora, QuantConfig(mode="int8")),
            "llama-2-7b NF4 + LoRA": memory.training_memory(cfg, lora, QuantConfig(mode="nf4")),
        }
        print()
        print("Weights + adapter + AdamW state from jax.eval_shape (no activations):")
        print(memory.format_table(rows))


if __name__ == "__main__":
    app.run(main)
