"""Benchmark: the server's overhead over calling Prime directly, and throughput under load.

Run it:  bazel run //jarvis:bench
         bazel run //jarvis:bench -- --model prime-135m-chat-v1 --max-tokens 64 --requests 2
         bazel run //jarvis:bench -- --concurrency 1,4,8,16
         bazel run //jarvis:bench -- --conversation      (the REPL vs llama.cpp: bench_conversation.py)

Prints a table (not a timed test): time to first token and tokens/s through the server
(a separate `assistant serve` process on loopback, streamed with SSE) against PrimeModel
in this process, then aggregate tokens/s with 1, 4, 8 and 16 concurrent streaming clients
and the 8-client / 1-client ratio (goal >= 4x). Sampling: Jarvis's defaults
(jarvis.sampling.DEFAULT), not greedy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from jarvis import bench_conversation
from jarvis.sampling import DEFAULT, Sampling

MESSAGES = [
    {"role": "system", "content": "You are Jarvis, a helpful and concise assistant."},
    {"role": "user", "content": "Explain in a few sentences why the sky is blue."},
]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    model: str = "prime-135m-chat-v1"
    max_tokens: int = 64
    requests: int = 2  # per client, one after another
    concurrency: tuple[int, ...] = (1, 4, 8, 16)
    direct_runs: int = 3
    sampling: Sampling = DEFAULT  # Jarvis's defaults; max_tokens above overrides its own

    def __post_init__(self):
        if self.max_tokens < 2:
            raise ValueError(f"BenchConfig.max_tokens must be >= 2, got {self.max_tokens}")
        if self.requests < 1 or self.direct_runs < 1:
            raise ValueError("BenchConfig.requests and BenchConfig.direct_runs must be >= 1")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"BenchConfig.concurrency must be client counts >= 1, got {self.concurrency}")


@dataclasses.dataclass(frozen=True)
class Sample:
    ttft: float  # seconds to the first text
    tokens: int
    seconds: float  # the whole request

    @property
    def decode_rate(self) -> float:
        return (
            (self.tokens - 1) / (self.seconds - self.ttft)
            if self.tokens > 1 and self.seconds > self.ttft
            else 0.0
        )


def direct(model, config: BenchConfig) -> list[Sample]:
    samples = []
    for _ in range(config.direct_runs + 1):  # the first compiles this prompt's shapes
        start = time.perf_counter()
        first = None
        stream = model.chat_stream(MESSAGES, **config.sampling.replace(max_tokens=config.max_tokens).kwargs())
        for piece in stream:
            if first is None and piece:
                first = time.perf_counter() - start
        samples.append(Sample(first or 0.0, stream.result.generated_tokens, time.perf_counter() - start))
    return samples[1:]


async def _one(http: httpx.AsyncClient, url: str, config: BenchConfig) -> Sample:
    body = {
        "model": "auto",
        "messages": MESSAGES,
        "max_tokens": config.max_tokens,
        "temperature": config.sampling.temperature,
        "top_p": config.sampling.top_p,
        "top_k": config.sampling.top_k,
        "min_p": config.sampling.min_p,
        "repetition_penalty": config.sampling.repetition_penalty,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, tokens = None, 0
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return Sample(first or 0.0, tokens, time.perf_counter() - start)


async def load(url: str, clients: int, config: BenchConfig) -> tuple[list[Sample], float]:
    async def client(http):
        return [await _one(http, url, config) for _ in range(config.requests)]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        start = time.perf_counter()
        results = await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return [s for per_client in results for s in per_client], wall


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config: BenchConfig, home: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), JARVIS_HOME=home)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jarvis.cli",
            "serve",
            "--port",
            str(port),
            "--model",
            config.model,
            "--max-concurrent",
            str(max(config.concurrency)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 900
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not come up within 15 minutes")


def aggregate_rate(samples: list[Sample], wall: float) -> float:
    return sum(s.tokens for s in samples) / wall if wall > 0 else 0.0


def _row(path: str, clients: int, samples: list[Sample], wall: float | None) -> str:
    ttft = statistics.mean(s.ttft for s in samples)
    rate = statistics.mean(s.decode_rate for s in samples)
    tokens = sum(s.tokens for s in samples)
    aggregate = f"{aggregate_rate(samples, wall):9.1f}" if wall else f"{rate:9.1f}"
    return f"| {path:16s} | {clients:7d} | {len(samples):8d} | {tokens:6d} | {ttft:13.3f} | {rate:15.1f} | {aggregate} |"


def scaling_goal(aggregates: dict[int, float], goal: float = 4.0) -> str:
    """The 8-client over 1-client aggregate tokens/s, met or missed against `goal`."""
    if not aggregates.get(1) or 8 not in aggregates:
        return "8-client / 1-client aggregate tokens/s: n/a (needs 1 and 8 in --concurrency)"
    ratio = aggregates[8] / aggregates[1]
    verdict = "met" if ratio >= goal else "missed"
    return f"8-client / 1-client aggregate tokens/s: {ratio:.2f}x (goal >= {goal:g}x: {verdict})"


def run(config: BenchConfig) -> str:
    from jarvis.router import Router, RouterConfig

    router = Router(RouterConfig(model=config.model))
    model, _ = router.load(config.model)
    print(
        f"model {model.info.name} ({model.backend}, quantization {model.quantization}); "
        f"max_tokens {config.max_tokens}; sampling temperature {config.sampling.temperature}, "
        f"top_p {config.sampling.top_p}, repetition penalty {config.sampling.repetition_penalty}; warming up...",
        file=sys.stderr,
        flush=True,
    )
    direct_samples = direct(model, config)
    lines = [
        "| path             | clients | requests | tokens | TTFT mean (s) | tok/s per stream | aggregate tok/s |",
        "|------------------|---------|----------|--------|---------------|------------------|-----------------|",
        _row("prime direct", 1, direct_samples, sum(s.seconds for s in direct_samples)),
    ]
    aggregates = {}
    with tempfile.TemporaryDirectory() as home:
        proc, url = start_server(config, home)
        try:
            asyncio.run(load(url, 1, dataclasses.replace(config, requests=1)))  # compile the prompt's shapes
            for clients in config.concurrency:
                samples, wall = asyncio.run(load(url, clients, config))
                aggregates[clients] = aggregate_rate(samples, wall)
                lines.append(_row("server (SSE)", clients, samples, wall))
                print(lines[-1], file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    lines += ["", scaling_goal(aggregates)]
    return "\n".join(lines)


def _client_counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrency takes counts like 1,4,8,16, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--max-tokens", type=int, dest="max_tokens")
    p.add_argument("--requests", type=int, help="requests per client")
    p.add_argument("--direct-runs", type=int, dest="direct_runs")
    p.add_argument("--concurrency", type=_client_counts, help="streaming clients per row, e.g. 1,4,8,16")
    p.add_argument(
        "--conversation", action="store_true", help="instead: a scripted chat through the REPL vs llama.cpp"
    )
    p.add_argument("--seed", type=int, help="--conversation: the sampling seed (default 0)")
    p.add_argument(
        "--llama-cpp",
        choices=("on", "off"),
        dest="llama_cpp",
        help="--conversation: the llama.cpp side (on by default when `bazel run //prime:bench` has built it)",
    )
    p.add_argument(
        "--llama-threads", type=int, dest="llama_threads", help="--conversation: llama.cpp threads (default: all cores)"
    )
    args = vars(p.parse_args(argv))
    conversation = args.pop("conversation")
    given = {k: v for k, v in args.items() if v is not None}
    if conversation:
        keep = {"model", "max_tokens", "seed", "llama_cpp", "llama_threads"}
        if set(given) - keep:
            p.error(f"--conversation takes only {', '.join('--' + k.replace('_', '-') for k in sorted(keep))}")
        print(bench_conversation.run(bench_conversation.ConversationConfig(**given)))
    else:
        if {"seed", "llama_cpp", "llama_threads"} & set(given):
            p.error("--seed, --llama-cpp and --llama-threads apply to --conversation only")
        print(run(BenchConfig(**given)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
