"""Jitted prefill + decode with a KV cache, bucketed static shapes, streaming and timing stats.

    gen = Generator(model)
    for step in gen.stream([prompt_ids], max_new_tokens=64):   # step: (B,) int32, -1 = row done
        ...
    result = gen.generate([prompt_ids], max_new_tokens=64)      # result.tokens, result.stats

Compilation is bounded by buckets. A prompt of P tokens is left-padded to the next prompt
bucket Pb (16, 24, 32, 48, 64, 96, 128, 192, ...: powers of two and 1.5x them, so padding
wastes at most a third), and the cache to Sb = the power of two >= max(Pb + max_new_tokens, 32).
One prefill program exists per (batch, Pb, Sb) and one decode program per (batch, Sb). A
1,000-token conversation that re-sends its growing history each turn (90-token user messages,
30-token replies) with max_new_tokens=128 touches Pb in {128, 256, 384, 512, 768, 1024} and
Sb in {256, 512, 1024, 2048}: at most 6 prefill and 4 decode compiles however many turns it
takes (`generate_test.py` counts them).

Prefill attends over the prompt alone and runs the LM head on its last slot only
(`Llama.prefill`); decode runs one token against the whole cache, which is donated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from reactor_core.generation.sampling import SamplingArrays, SamplingConfig, row_uniforms, sample

MIN_BUCKET = 16  # smallest prompt bucket
MIN_CACHE = 32  # smallest cache


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
    """The smallest size >= max(n, minimum) among minimum * 2^k and 1.5 * minimum * 2^k (prompt lengths)."""
    size = minimum
    while True:
        for candidate in (size, size * 3 // 2):
            if candidate >= n:
                return candidate
        size *= 2


def cache_bucket(n: int, minimum: int = MIN_CACHE) -> int:
    """The smallest power of two >= max(n, minimum) (cache lengths: few decode programs)."""
    size = minimum
    while size < n:
        size *= 2
    return size


@dataclasses.dataclass
class GenerationStats:
    prompt_tokens: int = 0  # real (unpadded) prompt tokens, all rows
    new_tokens: int = 0  # generated tokens, all rows
    prefill_s: float = 0.0  # prompt forward + first token on host
    decode_s: float = 0.0  # all later tokens
    time_to_first_token_s: float = 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        decoded = self.new_tokens - (self.new_tokens > 0)  # the first token belongs to prefill
        return decoded / self.decode_s if self.decode_s else 0.0


@dataclasses.dataclass
class GenerationResult:
    tokens: list[list[int]]  # generated ids per row, stop token included
    stats: GenerationStats


def _prefill(graphdef, state, tokens, positions, segments, max_length, params, seeds):
    model = nnx.merge(graphdef, state)
    logits, cache = model.prefill(tokens, positions=positions, segment_ids=segments, max_length=max_length)
    rows = jnp.arange(tokens.shape[0])[:, None]  # (B, 1)
    seen = jnp.zeros((tokens.shape[0], logits.shape[-1]), bool).at[rows, tokens].max(segments > 0)  # (B, V)
    steps = jnp.zeros(tokens.shape[0], jnp.int32)  # (B,)
    token = sample(logits, params, seen, row_uniforms(seeds, steps))  # (B,)
    seen = seen.at[jnp.arange(tokens.shape[0]), token].set(True)
    next_pos = positions[:, -1] + 1  # (B,) every row's last prompt token sits in the last slot
    return token, next_pos, cache, seen, steps + 1


def _decode(graphdef, state, token, positions, cache, seen, params, seeds, steps):
    model = nnx.merge(graphdef, state)
    segments = jnp.ones((token.shape[0], 1), jnp.int32)  # (B, 1)
    logits, cache = model.forward_with_cache(
        token[:, None], positions=positions[:, None], segment_ids=segments, cache=cache
    )
    token = sample(logits[:, -1], params, seen, row_uniforms(seeds, steps))  # (B,)
    seen = seen.at[jnp.arange(token.shape[0]), token].set(True)
    return token, positions + 1, cache, seen, steps + 1


class Generator:
    """Holds a model's split state and its compiled prefill/decode programs."""

    def __init__(self, model, *, min_bucket: int = MIN_BUCKET):
        self.config = model.config
        self.graphdef, self.state = nnx.split(model)
        self.min_bucket = min_bucket  # smallest prompt bucket
        self._traces = {"prefill": 0, "decode": 0}
        self.prefill_fn = jax.jit(self._counted("prefill", _prefill), static_argnums=(0, 5))
        # The cache and the seen-mask are rewritten in place step after step.
        self.decode_fn = jax.jit(self._counted("decode", _decode), static_argnums=0, donate_argnums=(4, 5))
        self.last_stats = GenerationStats()

    def _counted(self, name, fn):
        def traced(*args):
            self._traces[name] += 1  # runs only while tracing, i.e. once per compiled program
            return fn(*args)

        return traced

    def compile_counts(self) -> tuple[int, int]:
        """(prefill programs, decode programs) traced and compiled so far."""
        return self._traces["prefill"], self._traces["decode"]

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 128,
        sampling: SamplingConfig = SamplingConfig(),
        stop_ids: Sequence[int] | None = None,
    ) -> Iterator[np.ndarray]:
        """Yields each step's tokens (B,) int32; a row that already stopped yields -1.

        Stops after `max_new_tokens` or when every row produced one of `stop_ids`
        (default: the config's EOS ids). Stats land in `self.last_stats`.
        """
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stops = np.asarray(list(self.config.eos_token_ids if stop_ids is None else stop_ids), np.int32)
        batch = len(prompts)
        lengths = np.array([len(p) for p in prompts])
        p_len = bucket(int(lengths.max()), self.min_bucket)
        s_len = cache_bucket(p_len + max_new_tokens)
        tokens = np.zeros((batch, p_len), np.int32)
        segments = np.zeros((batch, p_len), np.int32)
        for i, p in enumerate(prompts):  # left padding: every row's last prompt token sits in the last slot
            tokens[i, p_len - len(p) :] = p
            segments[i, p_len - len(p) :] = 1
        pads = p_len - lengths
        positions = np.maximum(np.arange(p_len)[None, :] - pads[:, None], 0).astype(np.int32)  # (B, P)

        stats = GenerationStats(prompt_tokens=int(lengths.sum()))
        self.last_stats = stats
        params = SamplingArrays.rows([sampling] * batch)
        seeds = np.full(batch, (sampling.seed or 0) & 0xFFFFFFFF, np.uint32)
        start = time.perf_counter()
        token, next_pos, cache, seen, steps = self.prefill_fn(
            self.graphdef, self.state, tokens, positions, segments, s_len, params, seeds
        )
        done = np.zeros(batch, bool)
        for step in range(max_new_tokens):
            pending = None
            if step + 1 < max_new_tokens:  # dispatch the next step before reading this one (overlap)
                pending = self.decode_fn(self.graphdef, self.state, token, next_pos, cache, seen, params, seeds, steps)
            host = np.asarray(token)
            now = time.perf_counter()
            if step == 0:
                stats.prefill_s = stats.time_to_first_token_s = now - start
            else:
                stats.decode_s = now - start - stats.prefill_s
            out = np.where(done, -1, host).astype(np.int32)
            stats.new_tokens += int((~done).sum())
            done |= np.isin(host, stops)
            yield out
            if done.all() or pending is None:
                return
            token, next_pos, cache, seen, steps = pending

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 128,
        sampling: SamplingConfig = SamplingConfig(),
        stop_ids: Sequence[int] | None = None,
    ) -> GenerationResult:
        rows: list[list[int]] = [[] for _ in prompts]
        for step in self.stream(prompts, max_new_tokens=max_new_tokens, sampling=sampling, stop_ids=stop_ids):
            for row, tok in zip(rows, step.tolist()):
                if tok >= 0:
                    row.append(tok)
        return GenerationResult(tokens=rows, stats=self.last_stats)


def generate(model, prompts: Sequence[Sequence[int]], **kwargs) -> GenerationResult:
    """One-off convenience: builds a Generator (and compiles) for a single call."""
    return Generator(model).generate(prompts, **kwargs)
