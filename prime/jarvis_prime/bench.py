"""Benchmark: Prime's backends x quantizations against bare mlx-lm, transformers and llama.cpp.

    bazel run //prime:bench
    bazel run //prime:bench -- --decode_tokens=32 --prefill_tokens=256 --rows=prime-jax,transformers

Model: prime-135m-chat-v1 (SmolLM2-135M-Instruct, the same converted weights for every
runner; llama.cpp reads the original Q4_1 GGUF). Each row runs in its own process, so the
peak memory column is that row's alone. Per row, after a warm-up (JAX compiles here):

- decode tokens/s: greedy continuation of a plain-text prompt, (n - 1) / (t_last - t_first),
  best of `--repeats` runs (the machine may be shared)
- TTFT: time to the first token of that continuation (prefill of a short prompt)
- prompt tokens/s: a `--prefill_tokens` prompt over its time to first token (one run)
- peak RSS of the row's process

llama.cpp: through llama-cpp-python (built from PyPI's source release with this machine's
compiler, as its own docs describe). It is not in the lock (a multi-minute C++ build no test
needs): `--llama_cpp=build` (the default) builds the pinned version once into
`$PRIME_HOME/tools/` and reuses it; `--llama_cpp=off` skips the row. A failed build leaves the
row with the reason and the build log's path. Threads: all cores, like every other runner.

The goals printed at the end: the default backend (JAX here, MLX on Apple Silicon), at the
model's default quantization on this machine (8-bit on a CPU-only box), decodes at least 2x
faster than transformers and prefills at least as fast; the MLX backend's
overhead over bare mlx-lm stays under 5%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time

MODEL = "prime-135m-chat-v1"
ROWS = (
    ("prime-jax", None),
    ("prime-jax", "8bit"),
    ("prime-jax", "4bit"),
    ("prime-mlx", None),
    ("prime-mlx", "8bit"),
    ("prime-mlx", "4bit"),
    ("mlx-lm", None),
    ("mlx-lm", "8bit"),
    ("mlx-lm", "4bit"),
    ("transformers", None),
    ("llama.cpp", "Q4_1"),
)
_MARK = "BENCH_RESULT "
LLAMA_CPP_VERSION = "0.3.36"  # llama-cpp-python; its runtime deps besides numpy/jinja2 below
LLAMA_CPP_EXTRA = ("diskcache==5.6.3",)


@dataclasses.dataclass
class Row:
    runner: str
    quantization: str | None
    load_s: float = 0.0
    ttft_s: float = 0.0
    prompt_tps: float = 0.0
    decode_tps: float = 0.0
    tokens: int = 0
    peak_mib: float = 0.0
    note: str = ""


def _peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _rates(times: list[float], start: float) -> tuple[float, float]:
    """(time to first token, decode tokens/s) from per-token arrival times."""
    ttft = times[0] - start
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return ttft, decode


# ---- runners (each in its own process) ----


def _best(measure, repeats: int) -> tuple[float, float, int]:
    """Best (lowest TTFT, highest decode rate) over `repeats` runs of measure() -> times, start, n."""
    ttft, decode, tokens = float("inf"), 0.0, 0
    for _ in range(repeats):
        times, start, n = measure()
        t, d = _rates(times, start)
        ttft, decode, tokens = min(ttft, t), max(decode, d), n
    return ttft, decode, tokens


def run_prime(backend: str, quant, decode_ids, prefill_ids, n: int, repeats: int) -> Row:
    from jarvis_prime import PrimeModel

    row = Row(f"prime-{backend}", quant)
    t = time.perf_counter()
    model = PrimeModel.from_pretrained(MODEL, backend=backend, quantization=quant or "none")
    row.load_s = time.perf_counter() - t
    warmups = ((decode_ids, n), (prefill_ids, 1)) if backend == "jax" else ((decode_ids, 4),)
    for ids, k in warmups:  # JAX compiles one program per shape bucket, here and not in the timing
        for _ in model.stream_ids(ids, max_tokens=k):
            pass

    def measure():
        stream = model.stream_ids(decode_ids, max_tokens=n)
        times, start = [], time.perf_counter()
        for _ in stream:
            times.append(time.perf_counter())
        return times, start, stream.result.generated_tokens

    row.ttft_s, row.decode_tps, row.tokens = _best(measure, repeats)
    start = time.perf_counter()
    for _ in model.stream_ids(prefill_ids, max_tokens=1):
        pass
    row.prompt_tps = len(prefill_ids) / (time.perf_counter() - start)
    return row


def run_mlx_lm(quant, decode_ids, prefill_ids, n: int, repeats: int) -> Row:
    from pathlib import Path

    from mlx import nn
    from mlx_lm.generate import stream_generate
    from mlx_lm.utils import load_model, load_tokenizer

    from jarvis_prime import sources

    row = Row("mlx-lm", quant)
    path = sources.resolve(MODEL).path
    t = time.perf_counter()
    model, _ = load_model(Path(path))
    if quant:
        nn.quantize(model, group_size=64, bits=int(quant[0]))
    tokenizer = load_tokenizer(Path(path))
    row.load_s = time.perf_counter() - t
    for _ in stream_generate(model, tokenizer, decode_ids, max_tokens=4):
        pass

    def measure():
        times, start = [], time.perf_counter()
        for response in stream_generate(model, tokenizer, decode_ids, max_tokens=n):
            times.append(time.perf_counter())
        return times, start, response.generation_tokens

    row.ttft_s, row.decode_tps, row.tokens = _best(measure, repeats)
    start = time.perf_counter()
    for _ in stream_generate(model, tokenizer, prefill_ids, max_tokens=1):
        pass
    row.prompt_tps = len(prefill_ids) / (time.perf_counter() - start)
    return row


def run_transformers(decode_ids, prefill_ids, n: int, repeats: int) -> Row:
    """float32 `generate`, at torch's default thread count and at one thread (the better is kept:
    on a shared machine two OpenMP threads can be several times slower than one)."""
    import torch
    from transformers import AutoModelForCausalLM

    from jarvis_prime import sources

    row = Row("transformers", None)
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(sources.resolve(MODEL).path, dtype=torch.float32)
    row.load_s = time.perf_counter() - t

    def gen(ids, k):
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(torch.tensor([ids]), max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=0)
        return time.perf_counter() - start

    best = None
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        gen(decode_ids, 4)
        first = min(gen(decode_ids, 1) for _ in range(repeats))
        full = min(gen(decode_ids, n) for _ in range(repeats))
        decode = (n - 1) / max(full - first, 1e-9)
        prompt = len(prefill_ids) / gen(prefill_ids, 1)
        if best is None or decode > best[1]:
            best = (first, decode, prompt, threads)
    row.ttft_s, row.decode_tps, row.prompt_tps, threads = best
    row.tokens, row.note = n, f"torch threads={threads}"
    return row


def run_llama_cpp(decode_ids, prefill_ids, n: int, repeats: int) -> Row:
    from reactor_core.formats.pretrained import offline_gguf_path

    from jarvis_prime import llama_cpp_peer

    row = Row("llama.cpp", "Q4_1")
    threads = os.cpu_count() or 1
    t = time.perf_counter()
    llm, note = llama_cpp_peer.load(offline_gguf_path("prime-135m-chat"), n_ctx=2048, threads=threads, n_batch=512)
    row.load_s = time.perf_counter() - t

    def measure():
        llm.reset()
        times, start = [], time.perf_counter()
        for _ in llm.generate(decode_ids, temp=0.0):
            times.append(time.perf_counter())
            if len(times) == n:
                break
        return times, start, len(times)

    row.ttft_s, row.decode_tps, row.tokens = _best(measure, repeats)
    llm.reset()
    start = time.perf_counter()
    next(iter(llm.generate(prefill_ids, temp=0.0)))
    row.prompt_tps = len(prefill_ids) / (time.perf_counter() - start)
    row.note = note
    return row


def worker(spec: dict) -> Row:
    runner, quant = spec["runner"], spec["quantization"]
    args = (spec["decode_ids"], spec["prefill_ids"], spec["decode_tokens"], spec["repeats"])
    if runner.startswith("prime-"):
        row = run_prime(runner.removeprefix("prime-"), quant, *args)
    elif runner == "mlx-lm":
        row = run_mlx_lm(quant, *args)
    elif runner == "transformers":
        row = run_transformers(*args)
    else:
        row = run_llama_cpp(*args)
    row.peak_mib = _peak_mib()
    return row


# ---- parent ----


def prompts(prefill_tokens: int) -> tuple[list[int], list[int]]:
    """(decode prompt ids, prefill prompt ids): plain chatterbot text, no template, so greedy
    continuations run on instead of ending the turn."""
    from jarvis_prime import sources
    from jarvis_prime.evaluate import chatterbot_texts
    from jarvis_prime.tokenizer import load_tokenizer

    tok = load_tokenizer(sources.resolve(MODEL).path)
    text = "\n".join(chatterbot_texts())
    ids = tok.encode(text, add_special_tokens=False)
    decode = tok.encode("The history of the steam engine begins", add_special_tokens=False)
    if len(ids) < prefill_tokens:
        raise ValueError(f"--prefill_tokens={prefill_tokens}: the corpus has only {len(ids)} tokens")
    return decode, ids[:prefill_tokens]


# ---- llama.cpp (llama-cpp-python, built here on demand) ----


def llama_cpp_dir() -> str:
    """Where `--llama_cpp=build` installs llama-cpp-python: per version, Python and machine."""
    import platform

    from jarvis_prime import store

    tag = f"llama-cpp-python-{LLAMA_CPP_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"
    return os.path.join(store.default_home(), "tools", tag)


def _llama_cpp_importable(extra_dir: str | None) -> bool:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        return True
    return bool(extra_dir) and os.path.isfile(os.path.join(extra_dir, "llama_cpp", "__init__.py"))


def build_llama_cpp(target: str, log=print) -> str | None:
    """Builds llama-cpp-python into `target` (pip from PyPI, this machine's compiler) unless it is
    there already. Returns None when usable, else why not. Atomic: a build that dies leaves no
    half-installed `target` behind, only `target`.log."""
    if _llama_cpp_importable(target):
        return None
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging, build_log = target + ".partial", target + ".log"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-deps"]
    cmd += ["--target", staging, f"llama-cpp-python=={LLAMA_CPP_VERSION}", *LLAMA_CPP_EXTRA]
    log(
        f"llama.cpp: building llama-cpp-python {LLAMA_CPP_VERSION} from PyPI into {target} "
        f"(once; about 15 minutes on 2 cores; log: {build_log})",
        flush=True,
    )
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
    start = time.perf_counter()
    with open(build_log, "w") as out:
        try:
            code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
        except OSError as e:  # no pip in this interpreter, say
            out.write(f"{cmd}: {e}\n")
            code = -1
    if code != 0 or not _llama_cpp_importable(staging):
        shutil.rmtree(staging, ignore_errors=True)
        return f"not available: building llama-cpp-python failed (pip exit {code}); see {build_log}"
    os.replace(staging, target)
    log(f"llama.cpp: built in {time.perf_counter() - start:.0f}s", flush=True)
    return None


def available(runner: str, llama_cpp_path: str | None = None) -> str | None:
    """Why a runner cannot run here, or None. `llama_cpp_path`: a directory that may hold
    llama-cpp-python besides the environment's own packages."""
    import importlib.util

    from jarvis_prime.backends import mlx_backend

    if runner in ("prime-mlx", "mlx-lm") and not mlx_backend.available():
        return "mlx / mlx-lm not installed"
    if runner == "llama.cpp" and not _llama_cpp_importable(llama_cpp_path):
        return "not available (llama-cpp-python is not installed; `bazel run //prime:bench -- --llama_cpp=build` builds it)"
    if runner == "transformers" and importlib.util.find_spec("torch") is None:
        return "torch not installed"
    return None


def run_row(
    runner: str,
    quant,
    decode_ids,
    prefill_ids,
    decode_tokens: int,
    repeats: int,
    timeout: float,
    llama_cpp_path: str | None = None,
) -> Row:
    why = available(runner, llama_cpp_path)
    if why:
        return Row(runner, quant, note=why)
    spec = {
        "runner": runner,
        "quantization": quant,
        "decode_ids": decode_ids,
        "prefill_ids": prefill_ids,
        "decode_tokens": decode_tokens,
        "repeats": repeats,
    }
    path = [p for p in sys.path if p] + ([llama_cpp_path] if llama_cpp_path and runner == "llama.cpp" else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
            capture_output=True,
            check=False,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Row(runner, quant, note=f"timed out after {timeout:.0f}s")
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return Row(**json.loads(line[len(_MARK) :]))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return Row(runner, quant, note=f"failed: {tail[:120]}")


def format_table(rows: list[Row]) -> str:
    header = ["runner", "quant", "load s", "TTFT s", "prompt tok/s", "decode tok/s", "tokens", "peak MiB", "note"]
    lines = [header]
    for r in rows:
        if r.note and not r.decode_tps:
            lines.append([r.runner, r.quantization or "float32", "", "", "", "", "", "", r.note])
            continue
        lines.append(
            [
                r.runner,
                r.quantization or "float32",
                f"{r.load_s:.1f}",
                f"{r.ttft_s:.3f}",
                f"{r.prompt_tps:.1f}",
                f"{r.decode_tps:.1f}",
                str(r.tokens),
                f"{r.peak_mib:.0f}",
                r.note,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def goals(rows: list[Row], default_backend: str, apple_silicon: bool, default_quant: str | None = None) -> list[str]:
    """Goal lines; `default_quant` is the model's default quantization on this machine."""
    by = {(r.runner, r.quantization): r for r in rows if r.decode_tps}
    out = []
    ref = by.get(("transformers", None))
    ours = by.get((f"prime-{default_backend}", default_quant))
    if ref and ours:
        speed = ours.decode_tps / ref.decode_tps
        prefill = ours.prompt_tps / ref.prompt_tps
        which = f"{default_backend}, {default_quant or 'float32'}"
        out.append(
            f"default backend ({which}) decode {ours.decode_tps:.1f} vs transformers "
            f"{ref.decode_tps:.1f} tok/s: {speed:.2f}x (goal >= 2x): {'MET' if speed >= 2 else 'MISSED'}"
        )
        out.append(
            f"default backend prefill {ours.prompt_tps:.0f} vs transformers {ref.prompt_tps:.0f} tok/s: "
            f"{prefill:.2f}x (goal >= 1x): {'MET' if prefill >= 1 else 'MISSED'}"
        )
    bar = by.get(("llama.cpp", "Q4_1"))
    if bar and ours:
        out.append(
            f"default backend vs llama.cpp (Q4_1, the bar): decode {ours.decode_tps / bar.decode_tps:.2f}x, "
            f"prefill {ours.prompt_tps / bar.prompt_tps:.2f}x"
        )
    for quant in (None, "8bit", "4bit"):
        bare, prime = by.get(("mlx-lm", quant)), by.get(("prime-mlx", quant))
        if bare and prime:
            overhead = 1 - prime.decode_tps / bare.decode_tps
            where = "goal < 5%" if apple_silicon else "goal < 5% applies on Apple Silicon; informational here"
            out.append(f"MLX backend overhead over mlx-lm ({quant or 'float32'}): {overhead:+.1%} decode ({where})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode_tokens", type=int, default=64)
    parser.add_argument("--prefill_tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="decode runs per row; the best is reported")
    parser.add_argument("--rows", default="", help="comma-separated runners to keep (e.g. prime-jax,transformers)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per row")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    parser.add_argument(
        "--llama_cpp",
        choices=("build", "off"),
        default="build",
        help="build: build llama-cpp-python once into $PRIME_HOME/tools if it is not installed; off: skip the row",
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        row = worker(json.loads(args.worker))
        print(_MARK + json.dumps(dataclasses.asdict(row)), flush=True)
        return 0

    from jarvis_prime import backends, catalogue
    from jarvis_prime.catalogue import Machine

    machine = Machine.detect()
    keep = {r for r in args.rows.split(",") if r}
    decode_ids, prefill_ids = prompts(args.prefill_tokens)
    print(
        f"{MODEL}: decode {args.decode_tokens} tokens after a {len(decode_ids)}-token prompt; "
        f"prefill {len(prefill_ids)} tokens; {os.cpu_count()} CPUs, {machine.system} {machine.arch}",
        flush=True,
    )
    llama_path, llama_why = llama_cpp_dir(), None
    if args.llama_cpp == "off":
        llama_why = "skipped (--llama_cpp=off)"
    elif not keep or "llama.cpp" in keep:
        llama_why = build_llama_cpp(llama_path)
    rows = []
    for runner, quant in ROWS:
        if keep and runner not in keep:
            continue
        if runner == "llama.cpp" and llama_why:
            rows.append(Row(runner, quant, note=llama_why))
        else:
            rows.append(
                run_row(
                    runner, quant, decode_ids, prefill_ids, args.decode_tokens, args.repeats, args.timeout, llama_path
                )
            )
        print(f"  {runner} {quant or 'float32'}: {rows[-1].decode_tps:.1f} tok/s {rows[-1].note}", flush=True)
    print()
    print(format_table(rows))
    print()
    default_quant = catalogue.info(MODEL, machine=machine, status="bench").default_quantization
    for line in goals(rows, backends.choose("auto", machine), machine.apple_silicon, default_quant):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
