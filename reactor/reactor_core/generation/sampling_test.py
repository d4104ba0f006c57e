import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.generation.sampling import (
    SamplingArrays,
    SamplingConfig,
    apply_repetition_penalty,
    row_uniforms,
    sample,
)

LOGITS = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))  # (1, 4)


def test_repetition_penalty_follows_hf():
    logits = jnp.array([[2.0, -2.0, 1.0]])
    seen = jnp.array([[True, True, False]])
    np.testing.assert_allclose(apply_repetition_penalty(logits, seen, 2.0), [[1.0, -4.0, 1.0]])


@pytest.mark.parametrize(
    "setting, kept",
    [
        ({"temperature": 1.0, "top_k": 2}, {0, 1}),
        ({"temperature": 1.0, "top_p": 0.7}, {0, 1}),  # 0.5 < 0.7, 0.75 >= 0.7
        ({"temperature": 1.0, "top_p": 0.3}, {0}),
        ({"temperature": 1.0, "min_p": 0.4}, {0, 1}),  # floor 0.2
        ({"temperature": 1.0, "top_k": 3, "top_p": 0.9}, {0, 1, 2}),
        ({"temperature": 1.0}, {0, 1, 2, 3}),
        ({"temperature": 0.0, "top_p": 0.3}, {0}),
    ],
)
def test_filters_on_a_known_distribution(setting, kept):
    n = 200  # uniforms spread over [0, 1): every survivor is drawn
    params = SamplingArrays.rows([setting] * n)
    tokens = sample(jnp.repeat(LOGITS, n, axis=0), params, jnp.zeros((n, 4), bool), jnp.linspace(0.0, 0.999, n))
    assert set(np.asarray(tokens).tolist()) == kept


def test_invalid_values_name_the_field():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)


# ---- batched sampler ----

OFF = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}


def _reference_survivors(logits, seen, setting):
    """Pure numpy: one row (V,) -> (survivor ids in pick order, their probabilities, margin).

    float32 up to the scaled logits (the same IEEE ops as `sample`), float64 after. margin is
    the smallest relative gap of any comparison that decided the outcome; callers redraw cases
    where float32 rounding could flip it.
    """
    x = logits.astype(np.float32)
    penalty = np.float32(setting["repetition_penalty"])
    x = np.where(seen, np.where(x > 0, x / penalty, x * penalty), x).astype(np.float32)
    if setting["temperature"] == 0:
        top = int(np.argmax(x))
        runner_up = np.max(np.delete(x, top)) if len(x) > 1 else -np.inf
        return np.array([top]), np.array([1.0]), float(x[top] - runner_up) if runner_up < x[top] else np.inf
    x = (x / np.float32(setting["temperature"])).astype(np.float64)
    order = np.lexsort((np.arange(len(x)), -x))  # probability descending, then lower id
    p = np.exp(x[order] - x[order[0]])
    margins = [np.inf]
    n = len(p) if setting["top_k"] == 0 else min(len(p), setting["top_k"])
    if setting["top_p"] < 1:
        q = p[:n] / p[:n].sum()  # renormalized after top-k
        before = np.concatenate([[0.0], np.cumsum(q)[:-1]])
        n_p = max(1, int(np.sum(before < setting["top_p"])))
        margins.append(setting["top_p"] - before[n_p - 1] if n_p > 1 else np.inf)
        margins.append(before[n_p] - setting["top_p"] if n_p < n else np.inf)
        n = n_p
    if setting["min_p"] > 0:
        ratio = p[:n] / p[0]
        n_m = int(np.sum(ratio >= setting["min_p"]))
        margins.append(ratio[n_m - 1] / setting["min_p"] - 1)
        margins.append(1 - ratio[n_m] / setting["min_p"] if n_m < n else np.inf)
        n = n_m
    return order[:n], p[:n] / p[:n].sum(), min(margins)


def _reference_token(logits, seen, setting, u):
    """(token, margin, survivors) for one row and its uniform, by inverse CDF."""
    ids, probs, margin = _reference_survivors(logits, seen, setting)
    cdf = np.cumsum(probs)
    i = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(ids) - 1)
    gaps = [cdf[i] - u * cdf[-1]] + ([u * cdf[-1] - cdf[i - 1]] if i > 0 else [])
    return int(ids[i]), min(margin, *gaps), len(ids)


def _random_row(rng, vocab, k):
    scale = rng.choice([0.3, 1.0, 3.0, 8.0])
    logits = rng.normal(size=vocab) * scale
    if rng.random() < 0.3:  # many exact ties
        logits = np.round(logits)
    if rng.random() < 0.2 and vocab > k + 1:  # a tie straddling the candidate boundary
        top = np.sort(logits)[::-1]
        logits[np.isin(logits, top[k - 1 : k + 2])] = top[k]
    setting = {
        "temperature": float(rng.choice([0.0, 0.5, 1.0, 1.0, 2.0])),
        "top_k": int(rng.choice([0, 0, 0, 1, 3, k - 1, k, k + 1, vocab])),
        "top_p": float(rng.choice([1.0, 1.0, 0.5, 0.9, 0.99])),
        "min_p": float(rng.choice([0.0, 0.0, 0.02, 0.2])),
        "repetition_penalty": float(rng.choice([1.0, 1.0, 1.3, 0.7])),
    }
    return logits.astype(np.float32), rng.random(vocab) < 0.1, setting, np.float32(rng.random())


def test_sample_matches_numpy_reference():
    rng = np.random.default_rng(0)
    survivors = {"below K": 0, "exactly K": 0, "beyond K": 0, "greedy": 0}
    shapes = [(6, 8), (10, 8), (17, 8), (40, 8), (100, 8), (300, 8), (300, 64), (300, 16)]
    for vocab, k in shapes:
        fn = jax.jit(functools.partial(sample, candidates=k))
        for _ in range(12):
            rows, expected = [], []
            while len(rows) < 8:
                row = _random_row(rng, vocab, k)
                token, margin, n = _reference_token(*row)
                if margin < 1e-4:  # float32 rounding could decide this one: draw another
                    continue
                rows.append(row)
                expected.append(token)
                if row[2]["temperature"] == 0:
                    survivors["greedy"] += 1
                elif k < vocab:
                    survivors["below K" if n < k else "exactly K" if n == k else "beyond K"] += 1
            logits, seen, settings, uniforms = zip(*rows)
            got = fn(np.stack(logits), SamplingArrays.rows(settings), np.stack(seen), np.stack(uniforms))
            assert np.asarray(got).tolist() == expected, (vocab, k, settings)
    assert min(survivors.values()) >= 20, survivors  # both paths and the K boundary ran


def test_three_tiers_match_numpy_reference():
    """candidates 8, wide 40, vocab 300: survivors within 8, within 40, and beyond."""
    rng = np.random.default_rng(5)
    fn = jax.jit(functools.partial(sample, candidates=8, wide=40))
    tiers = {"candidates": 0, "wide": 0, "sort": 0}
    for _ in range(40):
        rows, expected = [], []
        while len(rows) < 8:
            row = _random_row(rng, 300, 8)
            token, margin, n = _reference_token(*row)
            if margin < 1e-4:
                continue
            rows.append(row)
            expected.append(token)
            if row[2]["temperature"] > 0:
                tiers["candidates" if n <= 8 else "wide" if n <= 40 else "sort"] += 1
        logits, seen, settings, uniforms = zip(*rows)
        got = fn(np.stack(logits), SamplingArrays.rows(settings), np.stack(seen), np.stack(uniforms))
        assert np.asarray(got).tolist() == expected, settings
    assert min(tiers.values()) >= 10, tiers


def _flat_blocks(head: float, tail: float, vocab: int = 50, k: int = 8) -> np.ndarray:
    """k tied tokens holding `head` of the mass, the rest tied and holding `tail`."""
    probs = np.concatenate([np.full(k, head / k), np.full(vocab - k, tail / (vocab - k))])
    return np.log(probs).astype(np.float32)


@pytest.mark.parametrize(
    "logits, setting, survivors",
    [
        (_flat_blocks(0.88, 0.12), {"top_p": 0.895}, 14),  # candidates' mass just short of top_p
        (_flat_blocks(0.91, 0.09), {"top_p": 0.895}, 8),  # just enough: fast path, exactly K
        (np.log(np.r_[np.ones(8), 0.105, np.full(41, 0.01)]).astype(np.float32), {"min_p": 0.1}, 9),
        (np.log(np.r_[np.ones(8), 0.095, np.full(41, 0.01)]).astype(np.float32), {"min_p": 0.1}, 8),
    ],
)
def test_candidate_boundary(logits, setting, survivors):
    setting = {**OFF, "temperature": 1.0, **setting}
    seen = np.zeros_like(logits, dtype=bool)
    uniforms = np.linspace(0.01, 0.99, 16, dtype=np.float32)
    expected = []
    for u in uniforms:
        token, margin, n = _reference_token(logits, seen, setting, u)
        assert margin > 1e-4 and n == survivors
        expected.append(token)
    batch = len(uniforms)
    params = SamplingArrays.rows([setting] * batch)
    got = sample(np.tile(logits, (batch, 1)), params, np.tile(seen, (batch, 1)), uniforms, candidates=8)
    assert np.asarray(got).tolist() == expected


@pytest.mark.parametrize(
    "setting",
    [
        {"temperature": 0.8},  # full-vocabulary fallback
        {"temperature": 1.0, "top_p": 0.8, "min_p": 0.05},
        {"temperature": 1.3, "top_k": 5, "repetition_penalty": 1.2},
    ],
)
def test_sample_frequencies_match_reference_probabilities(setting):
    draws, vocab = 4000, 40
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=vocab) * 1.5).astype(np.float32)
    seen = rng.random(vocab) < 0.2
    uniforms = row_uniforms(np.full(draws, 7, np.uint32), np.arange(draws, dtype=np.int32))
    params = SamplingArrays.rows([setting] * draws)
    tokens = sample(np.tile(logits, (draws, 1)), params, np.tile(seen, (draws, 1)), uniforms, candidates=8)
    freq = np.bincount(np.asarray(tokens), minlength=vocab) / draws
    ids, probs, _ = _reference_survivors(logits, seen, {**OFF, **setting})
    want = np.zeros(vocab)
    want[ids] = probs
    assert np.all(freq[want == 0] == 0)
    assert np.max(np.abs(freq - want)) < 4.5 * np.sqrt(0.25 / draws)  # ~4.5 sigma


def test_one_program_serves_every_setting():
    traces = 0

    @jax.jit
    def step(logits, params, seen, uniforms):
        nonlocal traces
        traces += 1
        return sample(logits, params, seen, uniforms, candidates=8)

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    seen = rng.random((3, 50)) < 0.1
    uniforms = np.float32([0.1, 0.5, 0.9])
    for setting in [
        {},
        {"temperature": 0.7, "top_p": 0.95, "repetition_penalty": 1.1},
        {"temperature": 1.0},  # fallback
        {"temperature": 0.5, "top_k": 3, "min_p": 0.1},
        {"temperature": 2.0, "top_k": 40, "repetition_penalty": 0.9},
    ]:
        mixed = [setting, {}, {"temperature": 1.0, "top_k": 2}]
        step(logits, SamplingArrays.rows(mixed), seen, uniforms).block_until_ready()
    assert traces == 1


def test_row_uniforms_depend_only_on_the_row():
    alone = row_uniforms(np.uint32([5]), np.int32([3]))
    batch = row_uniforms(np.uint32([1, 5, 9, 2]), np.int32([0, 3, 7, 3]))
    other = row_uniforms(np.uint32([8, 8, 5]), np.int32([1, 2, 3]))
    assert float(alone[0]) == float(batch[1]) == float(other[2])
    values = np.asarray(row_uniforms(np.arange(1000, dtype=np.uint32) % 3, np.arange(1000, dtype=np.int32)))
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() < 1
    assert len(set(values.tolist())) == 1000  # steps and seeds both move the draw


def test_sampling_arrays_rows():
    params = SamplingArrays.rows([SamplingConfig(temperature=0.7, top_p=0.95), {"top_k": 5}])
    np.testing.assert_allclose(params.temperature, [0.7, 0.0])
    assert params.top_k.dtype == np.int32 and params.top_k.tolist() == [0, 5]
    np.testing.assert_allclose(params.top_p, [0.95, 1.0])
    with pytest.raises(ValueError, match="row 1: top_p"):
        SamplingArrays.rows([{}, {"top_p": 0.0}])
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingArrays.rows([{"repetition_penalty": 0}])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
