import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.generation.sampling import SamplingConfig, apply_repetition_penalty, filter_logits, select

LOGITS = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))  # (1, 4)


def _kept(config: SamplingConfig) -> list[int]:
    out = filter_logits(LOGITS / config.values()["temperature"], config.values(), config.flags)
    return [i for i, v in enumerate(np.asarray(out)[0]) if np.isfinite(v)]


def test_filters():
    assert _kept(SamplingConfig(temperature=1.0, top_k=2)) == [0, 1]
    assert _kept(SamplingConfig(temperature=1.0, top_p=0.7)) == [0, 1]  # 0.5 < 0.7, 0.75 >= 0.7
    assert _kept(SamplingConfig(temperature=1.0, top_p=0.3)) == [0]
    assert _kept(SamplingConfig(temperature=1.0, min_p=0.4)) == [0, 1]  # floor 0.2
    assert _kept(SamplingConfig(temperature=1.0, top_k=3, top_p=0.9)) == [0, 1, 2]


def test_greedy_and_seeded_sampling():
    key = jax.random.key(0)
    greedy = SamplingConfig()
    assert int(select(LOGITS, key, None, greedy.values(), greedy.flags)[0]) == 0
    sampled = SamplingConfig(temperature=1.0, top_k=2, seed=3)
    draws = [int(select(LOGITS, jax.random.key(i), None, sampled.values(), sampled.flags)[0]) for i in range(40)]
    assert set(draws) == {0, 1}
    again = [int(select(LOGITS, jax.random.key(i), None, sampled.values(), sampled.flags)[0]) for i in range(40)]
    assert draws == again


def test_repetition_penalty_follows_hf():
    logits = jnp.array([[2.0, -2.0, 1.0]])
    seen = jnp.array([[True, True, False]])
    np.testing.assert_allclose(apply_repetition_penalty(logits, seen, 2.0), [[1.0, -4.0, 1.0]])


def test_invalid_values_name_the_field():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
