"""TrainingConfig: flat and nested forms, validation messages, JSON round trip."""

import dataclasses
import json
import sys

import pytest

from reactor_core.train import config as config_lib
from reactor_core.train.config import LoraConfig, OptimConfig, TrainingConfig


def test_seed_keywords_verbatim():
    config = TrainingConfig(model_name="llama-2-7b", use_lora=True, lora_rank=16, num_epochs=3)
    assert config.model.name == "llama-2-7b"
    assert config.lora.enabled and config.lora.rank == 16
    assert config.run.num_epochs == 3
    assert config.optim == OptimConfig()  # untouched sections keep their defaults


def test_top_level_import_is_lazy_and_works():
    import reactor_core

    assert reactor_core.TrainingConfig is TrainingConfig


def test_nested_and_flat_combine_flat_wins():
    config = TrainingConfig(lora=LoraConfig(rank=4, alpha=8.0), lora_rank=8, lr=1e-3, quant="nf4", model="tiny")
    assert (config.lora.rank, config.lora.alpha) == (8, 8.0)
    assert config.optim.learning_rate == 1e-3
    assert config.quant.mode == "nf4" and config.model.name == "tiny"


def test_frozen():
    config = TrainingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lora = LoraConfig()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(lora_rank=0), ["lora.rank", ">= 1"]),
        (dict(schedule="exp"), ["optim.schedule", "cosine", "linear", "constant"]),
        (dict(mode="ppo"), ["run.mode", "sft", "dpo"]),
        (dict(dtype="float16"), ["model.dtype", "float32", "bfloat16"]),
        (dict(quantize="fp4"), ["quant.mode", "nf4", "int8"]),
        (dict(lora_targets="q,x"), ["lora.targets", "'x'", "all-linear"]),
        (dict(model_name="llama2-7b"), ["model.name", "llama-2-7b"]),
        (dict(dpo_loss="ipo", dpo_label_smoothing=0.1), ["dpo.label_smoothing", "sigmoid"]),
        (dict(adam_b2=1.0), ["optim.b2", "[0, 1)"]),
        (dict(mesh_data=-1, mesh_fsdp=-1), ["mesh", "-1"]),
        (dict(use_lora=False, quantize="nf4"), ["quant.mode", "lora"]),
        (dict(loss_on="user"), ["DataConfig.loss_on", "assistant"]),
        (dict(lr_rate=1.0), ["lr_rate", "lora_rank"]),
    ],
)
def test_bad_values_name_the_field_and_allowed_values(kwargs, words):
    with pytest.raises(ValueError) as e:
        TrainingConfig(**kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_targets_normalised():
    assert LoraConfig(targets="v,q").targets == ("q_proj", "v_proj")
    assert LoraConfig(targets=["gate", "down_proj"]).targets == ("gate_proj", "down_proj")
    assert LoraConfig(targets="all-linear").targets == config_lib.LORA_TARGETS


def test_rslora_scale():
    assert LoraConfig(rank=16, alpha=32).scale == 2.0
    assert LoraConfig(rank=16, alpha=32, rslora=True).scale == 8.0


def test_json_round_trip(tmp_path):
    config = TrainingConfig(model_name="tiny", lora_targets="all-linear", lr=3e-4, mode="dpo", dpo_beta=0.2)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert TrainingConfig.load(str(path)) == config
    assert json.loads(config.to_json())["dpo"]["beta"] == 0.2


def test_every_leaf_field_has_one_flat_name():
    leaves = {(s, f.name) for s, cls in config_lib.SECTIONS.items() for f in dataclasses.fields(cls)}
    assert set(config_lib.FLAT_FIELDS.values()) == leaves
    assert len(config_lib.FLAT_FIELDS) == len(leaves)


def test_defaults_live_in_the_dataclasses():
    assert config_lib.default_of("lr") == OptimConfig().learning_rate
    assert config_lib.default_of("lora_rank") == LoraConfig().rank
    flat = TrainingConfig().flat()
    assert all(flat[k] == config_lib.default_of(k) or k == "lora_targets" for k in flat)


def test_mesh_section_is_dist_mesh_config():
    from reactor_core.dist import mesh as mesh_lib

    assert config_lib.SECTIONS["mesh"] is mesh_lib.MeshConfig
    assert TrainingConfig().mesh == mesh_lib.MeshConfig()
    config = TrainingConfig(mesh="data:2,fsdp:2,tensor:2", mesh_strategy="fsdp_tp")
    assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor, config.mesh.strategy) == (2, 2, 2, "fsdp_tp")
    assert config.flat()["mesh_strategy"] == "fsdp_tp"
    config = TrainingConfig(mesh_data=2, mesh_fsdp=-1, mesh_strategy="dp")  # the flat fields still work
    assert config.mesh == mesh_lib.MeshConfig(data=2, fsdp=-1, tensor=1, strategy="dp")
    assert TrainingConfig.from_dict(json.loads(config.to_json())) == config
    # A config.json from before the strategy field still loads (the default strategy).
    assert TrainingConfig.from_dict({"mesh": {"data": -1, "fsdp": 1, "tensor": 1}}).mesh.strategy == "fsdp"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(mesh="data:2,pipe:2"), ["TrainingConfig.mesh='data:2,pipe:2'", "bad entry 'pipe:2'"]),
        (dict(mesh="tensor:2"), ["MeshConfig.tensor", "--mesh_strategy=fsdp_tp"]),
        (dict(mesh_strategy="zero3"), ["MeshConfig.strategy", "--mesh_strategy", "fsdp_tp"]),
        (dict(mesh_tensor=0), ["MeshConfig.tensor", "--mesh_tensor"]),
    ],
)
def test_mesh_errors_name_the_field(kwargs, words):
    with pytest.raises(ValueError) as e:
        TrainingConfig(**kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_replace_keeps_other_fields():
    config = TrainingConfig(lora_rank=4).replace(data_path="x.jsonl", steps=7)
    assert (config.lora.rank, config.data.path, config.run.max_steps) == (4, "x.jsonl", 7)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
