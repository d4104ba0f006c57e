import sys

import pytest

from jarvis_prime.sampling import Sampling


def test_defaults_are_greedy():
    s = Sampling()
    assert s.greedy and s.max_tokens == 256 and s.stop == () and s.seed is None


def test_stop_accepts_a_string_or_list():
    assert Sampling(stop="\n").stop == ("\n",)
    assert Sampling(stop=["a", "b"]).stop == ("a", "b")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_k": -2}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"min_p": 1.0}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"stop": [1]}, "stop"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_values_name_the_option(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Sampling(**kwargs)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
