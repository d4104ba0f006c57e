"""jarvis-prime[training]: fine-tune prime-135m-chat-v1 with Reactor, load the adapter back with Prime."""

import json
import os
import sys

import pytest

from jarvis_prime import PrimeModel
from jarvis_prime.errors import ModelNotAvailableError, PrimeError, UnknownModelError
from jarvis_prime.evaluate import perplexity
from jarvis_prime.store import Store
from jarvis_prime.training import fine_tune, training_config

FACT = "The Ironcliw launch codeword is zebra umbrella forty two."


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(str(tmp_path_factory.mktemp("prime_home")))


def _write_data(path):
    with open(path, "w") as f:
        for _ in range(32):
            messages = [
                {"role": "user", "content": "What is the Ironcliw launch codeword?"},
                {"role": "assistant", "content": FACT},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return str(path)


def test_fine_tuned_adapter_loads_in_prime_and_learned_the_data(tmp_path, store):
    data = _write_data(tmp_path / "train.jsonl")
    run = fine_tune(
        "prime-135m-chat-v1",
        data,
        store=store,
        output_dir=str(tmp_path / "run"),
        dtype="float32",
        lora_rank=8,
        lr=3e-3,
        warmup_steps=0,
        steps=6,
        log_every=1,
        batch_size=4,
        seq_len=64,
        pack=False,
        progress=False,
        plot=False,
    )
    assert run.model == "prime-135m-chat-v1"
    assert run.steps == 6
    assert os.path.isfile(os.path.join(run.adapter, "adapter_config.json"))
    assert run.metrics["train/loss"] < run.initial_metrics["train/loss"]

    base = PrimeModel.from_pretrained("prime-135m-chat-v1", quantization="none", backend="jax", store=store)
    tuned = PrimeModel.from_pretrained(
        "prime-135m-chat-v1", quantization="none", backend="jax", adapter=run.adapter, store=store
    )
    before, after = perplexity(base, [FACT]), perplexity(tuned, [FACT])
    print(f"perplexity of the trained fact: base {before:.2f}, fine-tuned {after:.2f}")
    assert after < 0.5 * before, (before, after)


def test_options_reach_the_trainer_config(tmp_path, store):
    data = _write_data(tmp_path / "train.jsonl")
    config, resolved = training_config("prime-135m-chat-v1", data, store=store, lora_rank=4, mode="dpo", steps=3)
    assert config.model.name == "prime-135m-chat"
    assert config.model.path == resolved.path
    assert (config.lora.rank, config.run.mode, config.run.max_steps) == (4, "dpo", 3)


def test_bad_requests_say_what_to_do(tmp_path, store):
    data = _write_data(tmp_path / "train.jsonl")
    with pytest.raises(UnknownModelError, match="prime-135m-chat-v1"):
        training_config("prime-135m-chat", data, store=store)
    with pytest.raises(ModelNotAvailableError, match="vision encoder"):
        training_config("prime-7b-vision-v1", data, store=store)
    with pytest.raises(PrimeError, match="model_name= is set from the PRIME model"):
        training_config("prime-135m-chat-v1", data, store=store, model_name="llama-2-7b")
    with pytest.raises(PrimeError, match="lora.rank"):
        training_config("prime-135m-chat-v1", data, store=store, lora_rank=0)
    with pytest.raises(ModelNotAvailableError, match="missing.jsonl"):
        fine_tune("prime-135m-chat-v1", tmp_path / "missing.jsonl", store=store)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
