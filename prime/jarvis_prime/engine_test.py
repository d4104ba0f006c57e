"""The generation engine: KV reuse, eviction, batching equivalence, no compiles after warm-up.

Run: bazel test //prime:engine_test
"""

import sys
import threading

import numpy as np
import pytest
from flax import nnx
from reactor_core.generation.generate import Generator
from reactor_core.generation.sampling import SamplingConfig
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama

from jarvis_prime.engine import EngineConfig, GenerationEngine, chunk_plan
from jarvis_prime.errors import PrimeError
from jarvis_prime.sampling import Sampling

GREEDY = Sampling(temperature=0.0)
DEFAULTS = Sampling(temperature=0.7, top_p=0.95, repetition_penalty=1.1)  # Jarvis's


@pytest.fixture(scope="module")
def model():
    return Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def engine(model):
    engine = GenerationEngine(model, EngineConfig(slots=4, capacity=320, chunks=(8, 32)))
    engine.warm_up()
    yield engine
    engine.close()


def _reference(model, prompt, n):
    return Generator(model).generate([prompt], max_new_tokens=n, stop_ids=[]).tokens[0]


def _run(engine, prompt, n=10, sampling=GREEDY, seed=0, stop_ids=()):
    return list(engine.submit(prompt, sampling, max_tokens=n, seed=seed, stop_ids=stop_ids))


def test_greedy_equals_reactor_generation_across_chunk_sizes(model, engine):
    for length in (1, 7, 8, 9, 33, 75):  # one chunk, exact chunks, several chunks + a padded tail
        prompt = [int(t) for t in np.random.default_rng(length).integers(3, 250, length)]
        assert _run(engine, prompt) == _reference(model, prompt, 10), length


def test_next_turn_prefills_only_the_new_tokens(model, engine):
    turn1 = [11, 12, 13] * 20
    answer = _run(engine, turn1, n=12)
    before = dict(engine.stats)
    turn2 = turn1 + answer + [40, 41, 42, 43, 44]
    out = _run(engine, turn2, n=12)
    prefilled = engine.stats["prefilled"] - before.get("prefilled", 0)
    reused = engine.stats["reused"] - before.get("reused", 0)
    # The answer's last token was sampled, never fed: it is read with the new message.
    assert reused == len(turn1) + len(answer) - 1 and prefilled == 6
    assert out == _reference(model, turn2, 12)


def test_identical_prompt_reuses_all_but_its_last_token(engine):
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13]
    first = _run(engine, prompt)
    before = engine.stats["prefilled"]
    assert _run(engine, prompt) == first
    assert engine.stats["prefilled"] - before == 1


def test_evicted_conversation_is_prefilled_again_and_answers_identically(model):
    engine = GenerationEngine(model, EngineConfig(slots=2, capacity=256, chunks=(16,)))
    try:
        convo = [21, 22, 23, 24] * 5
        first = _run(engine, convo)
        for other in ([100] * 30, [150] * 30):  # two other conversations take both slots
            _run(engine, other)
        assert all(convo[:4] != cached[:4] for cached in engine.cached_tokens())  # evicted (LRU)
        before = engine.stats["prefilled"]
        assert _run(engine, convo) == first
        assert engine.stats["prefilled"] - before == len(convo)  # read again from scratch
    finally:
        engine.close()


def test_least_recently_used_slot_is_evicted(model):
    engine = GenerationEngine(model, EngineConfig(slots=2, capacity=256, chunks=(16,)))
    try:
        a, b, c = [30] * 20, [40] * 20, [50] * 20
        _run(engine, a)
        _run(engine, b)
        _run(engine, a + [1, 2])  # a is now the most recent
        _run(engine, c)  # must evict b, not a
        heads = {tuple(t[:3]) for t in engine.cached_tokens()}
        assert heads == {(30, 30, 30), (50, 50, 50)}
    finally:
        engine.close()


def test_batched_greedy_streams_equal_each_alone(model, engine):
    prompts = [[int(t) for t in np.random.default_rng(100 + i).integers(3, 250, 5 + 9 * i)] for i in range(4)]
    alone = [_reference(model, p, 14) for p in prompts]
    results = [None] * 4

    def go(i):
        results[i] = _run(engine, prompts[i], n=14)

    decode_steps = engine.stats["steps"]
    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == alone
    # Shared steps: far fewer decode steps than 4 streams x 13 tokens one at a time.
    assert engine.stats["steps"] - decode_steps < 4 * 13


def test_seeded_sampling_does_not_depend_on_the_batch(engine):
    prompt = [9, 8, 7, 6, 5, 4]
    alone = _run(engine, prompt, n=16, sampling=DEFAULTS, seed=123)
    assert _run(engine, prompt, n=16, sampling=DEFAULTS, seed=123) == alone
    assert _run(engine, prompt, n=16, sampling=DEFAULTS, seed=124) != alone
    together = [None, None]

    def go(i, p, seed):
        together[i] = _run(engine, p, n=16, sampling=DEFAULTS, seed=seed)

    threads = [threading.Thread(target=go, args=(0, prompt, 123)), threading.Thread(target=go, args=(1, [3] * 40, 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together[0] == alone


def test_no_program_compiles_after_warm_up(engine):
    traces = engine.traces
    assert traces == engine.warm_traces
    settings = [
        GREEDY,
        DEFAULTS,
        Sampling(temperature=1.3, top_k=5),
        Sampling(temperature=0.2, min_p=0.1, repetition_penalty=1.5),
        Sampling(temperature=0.9),  # plain temperature: the sampler's exact fallback path
    ]
    for i, sampling in enumerate(settings):
        _run(engine, [7 + i] * (3 + 17 * i), n=9, sampling=sampling, seed=i)
    threads = [threading.Thread(target=_run, args=(engine, [60 + i] * 12), kwargs={"n": 6}) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert engine.traces == traces


def test_stop_ids_and_max_tokens_end_a_request(model, engine):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    free = _reference(model, prompt, 10)
    assert _run(engine, prompt, n=10, stop_ids={free[3]}) == free[: free.index(free[3]) + 1]
    assert len(_run(engine, prompt, n=4)) == 4


def test_cancel_frees_the_slot_mid_batch(engine):
    request = engine.submit([77] * 10, GREEDY, max_tokens=250, seed=0)
    it = iter(request)
    next(it)
    request.cancel()
    assert len(list(it)) < 249  # stopped early
    others = [threading.Thread(target=_run, args=(engine, [80 + i] * 10)) for i in range(4)]
    for t in others:  # all four slots are usable again
        t.start()
    for t in others:
        t.join(120)
        assert not t.is_alive()


def test_chunk_plan_covers_the_prompt_cheaply():
    chunks = (4, 16, 64)
    assert chunk_plan(19, chunks) == (16, 4)  # not one padded 64, nor 16 + 16
    assert chunk_plan(1, chunks) == (4,) and chunk_plan(64, chunks) == (64,)
    assert chunk_plan(130, chunks) == (64, 64, 4)
    for n in range(1, 300):
        plan = chunk_plan(n, chunks)
        assert n <= sum(plan) <= n + 11  # covers n; pads only where a bigger chunk is cheaper


def test_bad_requests_are_clear_errors(engine):
    with pytest.raises(PrimeError, match="320-token window"):
        engine.submit([1] * 300, GREEDY, max_tokens=30)
    with pytest.raises(PrimeError, match="outside the vocabulary"):
        engine.submit([1, 999], GREEDY, max_tokens=3)
    with pytest.raises(PrimeError, match="empty"):
        engine.submit([], GREEDY, max_tokens=3)
    with pytest.raises(ValueError, match="slots"):
        EngineConfig(slots=0)


def test_sampling_is_the_one_config_type():
    assert Sampling is SamplingConfig


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
