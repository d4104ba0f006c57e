import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.generation.generate import Generator, bucket, cache_bucket
from reactor_core.generation.sampling import SamplingConfig
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama


@pytest.fixture(scope="module")
def model():
    return Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def gen(model):
    return Generator(model)


def _greedy_by_recompute(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(np.asarray(model(jnp.asarray([ids])))[0, -1])))
    return ids[len(prompt) :]


def test_cached_greedy_equals_full_recompute(model, gen):
    prompt = [5, 17, 99, 3, 42]
    out = gen.generate([prompt], max_new_tokens=12, stop_ids=[])
    assert out.tokens[0] == _greedy_by_recompute(model, prompt, 12)


def test_left_padded_batch_equals_rows_alone(gen):
    prompts = [[5, 17, 99, 3, 42, 7, 8], [11, 12], [200, 201, 202, 203]]
    batched = gen.generate(prompts, max_new_tokens=8, stop_ids=[])
    for prompt, row in zip(prompts, batched.tokens):
        assert gen.generate([prompt], max_new_tokens=8, stop_ids=[]).tokens[0] == row


def test_stop_ids_end_rows_and_streaming_marks_them(model, gen):
    prompt = [5, 17, 99, 3, 42]
    free = gen.generate([prompt], max_new_tokens=6, stop_ids=[]).tokens[0]
    stop = free[2]
    out = gen.generate([prompt, [9, 9, 9]], max_new_tokens=6, stop_ids=[stop])
    assert out.tokens[0] == free[: free.index(stop) + 1]
    steps = list(gen.stream([prompt], max_new_tokens=6, stop_ids=[stop]))
    assert [int(s[0]) for s in steps] == free[: free.index(stop) + 1]


def test_seeded_sampling_is_reproducible(gen):
    config = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9, min_p=0.01, repetition_penalty=1.2, seed=7)
    a = gen.generate([[1, 2, 3]], max_new_tokens=10, sampling=config, stop_ids=[]).tokens
    b = gen.generate([[1, 2, 3]], max_new_tokens=10, sampling=config, stop_ids=[]).tokens
    c = gen.generate([[1, 2, 3]], max_new_tokens=10, sampling=SamplingConfig(temperature=0.8, seed=8), stop_ids=[]).tokens
    assert a == b and a != c


def test_stats_are_reported(gen):
    gen.generate([[1, 2, 3, 4]], max_new_tokens=5, stop_ids=[])
    stats = gen.last_stats
    assert stats.prompt_tokens == 4 and stats.new_tokens == 5
    assert stats.time_to_first_token_s > 0 and stats.prompt_tokens_per_s > 0 and stats.decode_tokens_per_s > 0


def test_compiles_stay_bounded_over_a_1000_token_conversation(model):
    gen = Generator(model)
    history = [7] * 20
    shapes = set()
    while len(history) + 90 <= 1000:  # each turn re-sends the history plus a user message
        history += [9] * 90
        out = gen.generate([history], max_new_tokens=128, stop_ids=[2])
        shapes.add((bucket(len(history)), cache_bucket(bucket(len(history)) + 128)))
        history += out.tokens[0][:30] + [2] * (30 - len(out.tokens[0][:30]))  # a 30-token reply
    prefills, decodes = gen.compile_counts()
    assert prefills == len(shapes) <= 6
    assert decodes == len({s for _, s in shapes}) <= 4


def test_buckets():
    sizes = (1, 16, 17, 25, 45, 100, 129, 257, 385, 1000)
    assert [bucket(n) for n in sizes] == [16, 16, 24, 32, 48, 128, 192, 384, 512, 1024]
    for n in range(1, 5000):  # padding wastes at most a third of a bucket
        assert n <= bucket(n) and (bucket(n) <= 16 or bucket(n) - n < bucket(n) / 3)
    assert [cache_bucket(n) for n in (1, 32, 33, 100, 1000)] == [32, 32, 64, 128, 1024]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
