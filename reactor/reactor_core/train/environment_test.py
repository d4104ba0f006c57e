"""The seed's environment rule: Apple Silicon is inference-only; CPU boxes refuse 7B/13B."""

import sys

import pytest

from reactor_core import env as env_lib
from reactor_core.train import environment
from reactor_core.train.config import TrainingConfig
from reactor_core.train.environment import TrainingUnavailable


def _env(kind, accelerators=()):
    system, machine = ("Darwin", "arm64") if kind == "apple_silicon" else ("Linux", "x86_64")
    return env_lib.Environment(
        kind=kind, system=system, machine=machine, cpu_count=2, memory_bytes=24 * 2**30, accelerators=accelerators
    )


CPU = _env("cpu")
GPU = _env("cuda", (env_lib.Accelerator("cuda", "NVIDIA H100", 1, 80 * 2**30),))


def test_apple_silicon_is_inference_only_even_with_force():
    for force in (False, True):
        with pytest.raises(TrainingUnavailable, match="inference-only mode"):
            environment.check_can_train("prime-135m-chat", 134_515_008, force=force, environment=_env("apple_silicon"))


@pytest.mark.parametrize("name, params", [("llama-2-7b", 6_738_415_616), ("prime-13b-reasoning", 13_015_864_320)])
def test_cpu_refuses_large_presets_naming_the_smallest_and_gcp(name, params):
    with pytest.raises(TrainingUnavailable) as e:
        environment.check_can_train(name, params, environment=CPU)
    message = str(e.value)
    for word in (name, "prime-135m-chat", "GCP", "--force"):
        assert word in message, (word, message)


def test_force_and_accelerators_allow_large_presets():
    environment.check_can_train("llama-2-7b", 6_738_415_616, force=True, environment=CPU)
    environment.check_can_train("llama-2-7b", 6_738_415_616, environment=GPU)
    environment.check_can_train("prime-135m-chat", 134_515_008, environment=CPU)


def test_smallest_preset_is_the_135m_chat_model():
    assert environment.smallest_preset() == "prime-135m-chat"


def test_trainer_checks_before_loading_anything(monkeypatch):
    from reactor_core.train import base_model, trainer

    monkeypatch.setattr(environment.env_lib, "detect", lambda: CPU)
    monkeypatch.setattr(base_model, "load_base", lambda *a, **k: pytest.fail("weights were read"))
    config = TrainingConfig(model_name="llama-2-7b", use_lora=True, lora_rank=16, num_epochs=3)
    with pytest.raises(TrainingUnavailable, match="prime-135m-chat"):
        trainer.Trainer(config)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
