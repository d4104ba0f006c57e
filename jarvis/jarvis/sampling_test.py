"""Run: bazel test //jarvis:sampling_test"""

import sys

import pytest

from jarvis.sampling import Sampling


def test_kwargs_match_prime():
    kw = Sampling(stop=["\n\n"], seed=3).kwargs()
    assert set(kw) == {
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "stop",
        "seed",
    }
    assert kw["stop"] == ["\n\n"] and Sampling().kwargs()["stop"] is None


def test_json_round_trip_and_old_rows():
    s = Sampling(temperature=0.0, stop=("x",), seed=1)
    assert Sampling.from_json(s.to_json()) == s
    assert Sampling.from_json('{"temperature": 0.3, "removed_field": 1}') == Sampling(temperature=0.3)


@pytest.mark.parametrize(
    "field,value",
    [("max_tokens", 0), ("temperature", 3.0), ("top_p", 0.0), ("top_k", -1), ("seed", True), ("stop", [""])],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"Sampling.{field}"):
        Sampling(**{field: value})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
