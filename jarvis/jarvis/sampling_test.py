"""Run: bazel test //jarvis:sampling_test"""

import sys

import pytest
from jarvis_prime import Sampling as PrimeSampling

from jarvis.sampling import DEFAULT, Sampling, defaults, from_json


def test_one_type_across_the_parts():
    assert Sampling is PrimeSampling  # Prime's name for reactor's SamplingConfig
    assert (Sampling.__module__, Sampling.__name__) == ("reactor_core.generation.sampling_config", "SamplingConfig")


def test_jarvis_defaults_are_conversational():
    assert (DEFAULT.temperature, DEFAULT.top_p, DEFAULT.repetition_penalty, DEFAULT.max_tokens) == (0.7, 0.95, 1.1, 512)
    assert defaults(temperature=0.2).top_p == 0.95 and defaults(temperature=0.2).temperature == 0.2


def test_kwargs_match_prime():
    kw = DEFAULT.replace(stop=["\n\n"], seed=3).kwargs()
    assert set(kw) == {"max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "stop", "seed"}
    assert kw["stop"] == ["\n\n"] and DEFAULT.kwargs()["stop"] is None


def test_json_round_trip_and_old_rows():
    s = defaults(temperature=0.0, stop=("x",), seed=1)
    assert from_json(s.to_json()) == s
    # A row from an older version: missing fields take Jarvis's defaults, removed ones are dropped.
    assert from_json('{"temperature": 0.3, "removed_field": 1}') == defaults(temperature=0.3)
    assert from_json(None) == DEFAULT


@pytest.mark.parametrize(
    "field,value",
    [("max_tokens", 0), ("temperature", -1.0), ("top_p", 0.0), ("top_k", -1), ("seed", True), ("stop", [""])],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SamplingConfig.{field}"):
        defaults(**{field: value})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
