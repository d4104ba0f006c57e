import sys

import pytest

from reactor_core.models.config import (
    PRESET_PARAM_COUNTS,
    PRESETS,
    LlamaConfig,
    RopeScaling,
    from_hf_config,
    param_count,
    to_hf_config,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_param_count_is_exact(name):
    assert param_count(LlamaConfig.preset(name)) == PRESET_PARAM_COUNTS[name]


def test_every_preset_has_a_count():
    assert set(PRESETS) == set(PRESET_PARAM_COUNTS)


def test_prime_names_alias_their_base_models():
    assert LlamaConfig.preset("prime-7b-chat") == LlamaConfig.preset("llama-2-7b")
    assert LlamaConfig.preset("prime-13b-reasoning") == LlamaConfig.preset("llama-2-13b")
    assert LlamaConfig.preset("prime-135m-chat") == LlamaConfig.preset("smollm2-135m")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hf_config_round_trip(name):
    config = LlamaConfig.preset(name)
    assert from_hf_config(to_hf_config(config)) == config.replace(head_dim=config.resolved_head_dim)


def test_transformers_5_rope_parameters_are_read():
    hf = to_hf_config(LlamaConfig.preset("tiny"))
    del hf["rope_theta"], hf["rope_scaling"]
    hf["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 64}
    config = from_hf_config(hf)
    assert config.rope_theta == 5e5
    assert config.rope_scaling == RopeScaling("llama3", factor=8.0, original_max_position_embeddings=64)


def test_unknown_keys_are_tolerated():
    hf = to_hf_config(LlamaConfig.preset("tiny")) | {"some_future_key": 1, "use_cache": True}
    assert from_hf_config(hf).vocab_size == 256


def test_missing_required_key_is_named():
    hf = to_hf_config(LlamaConfig.preset("tiny"))
    del hf["intermediate_size"]
    with pytest.raises(ValueError, match="intermediate_size"):
        from_hf_config(hf, source="x/config.json")


def test_unknown_model_type_is_an_error():
    with pytest.raises(ValueError, match="gpt2"):
        from_hf_config(to_hf_config(LlamaConfig.preset("tiny")) | {"model_type": "gpt2"})


def test_invalid_config_names_the_field():
    with pytest.raises(ValueError, match="num_kv_heads"):
        LlamaConfig.preset("tiny").replace(num_kv_heads=3)
    with pytest.raises(ValueError, match="dtype"):
        LlamaConfig.preset("tiny").replace(dtype="int8")
    with pytest.raises(ValueError, match="Unknown model preset"):
        LlamaConfig.preset("nope")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
