"""DPO through the Trainer on the tiny model: LoRA-off reference, separate reference, full fine-tuning."""

import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.formats import hf
from reactor_core.lora import lora
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train import objectives, testing_data
from reactor_core.train.config import LoraConfig, TrainingConfig
from reactor_core.train.trainer import Trainer

REWARDS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def _pairs_batch(b=2, t=8):
    rng = np.random.default_rng(0)

    def rows():
        tokens = rng.integers(3, 200, (b, t)).astype(np.int32)
        weights = np.zeros((b, t), np.float32)
        weights[:, 3:-1] = 1
        return {
            "tokens": tokens,
            "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
            "segment_ids": np.ones((b, t), np.int32),
            "targets": np.roll(tokens, -1, 1),
            "weights": weights,
        }

    return {"chosen": rows(), "rejected": rows(), "valid": np.ones(b, np.float32)}


def test_lora_off_reference_equals_base_model_reference():
    """The reference from switched-off adapters is the base model's, without a copy."""
    cfg = LlamaConfig.preset("tiny")
    base = Llama(cfg, rngs=nnx.Rngs(0))
    batch = _pairs_batch()
    rows = objectives._pair_rows(batch)
    expected, _ = objectives.sequence_log_probs(base, rows)
    lora.apply_lora(base, LoraConfig(rank=4), rngs=nnx.Rngs(1))
    for i, (_, layer) in enumerate(lora.lora_layers(base)):
        layer.lora_b.set_value(0.1 * jax.random.normal(jax.random.key(i), layer.lora_b.get_value().shape))
    np.testing.assert_allclose(objectives.reference_log_probs(base, rows), expected, rtol=1e-6)
    policy, _ = objectives.sequence_log_probs(base, rows)
    assert float(np.abs(np.asarray(policy) - np.asarray(expected)).max()) > 1e-3
    loss, weight, metrics = objectives.dpo_objective(
        base, batch, None, beta=0.1, loss_type="sigmoid", label_smoothing=0.0
    )
    assert float(weight) == 2 and set(REWARDS) <= set(metrics)


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dpo"))
    return tmp, testing_data.write_preferences(os.path.join(tmp, "pref.jsonl"))


def test_dpo_lora_raises_reward_accuracy(pref_data):
    tmp, data = pref_data
    config = TrainingConfig(**testing_data.tiny_config_kwargs(tmp, mode="dpo", steps=10, dpo_beta=0.5, eval_every=0))
    result = Trainer(config, tokenizer=tiny_tokenizer()).train(data)
    # Before training policy == reference: every reward is 0 and no pair counts as won.
    assert result.initial_metrics["eval/rewards/accuracies"] == 0.0
    assert result.initial_metrics["eval/loss"] == pytest.approx(np.log(2), rel=1e-5)
    assert result.metrics["eval/rewards/accuracies"] > 0.7
    assert result.metrics["eval/rewards/margins"] > 0
    assert result.metrics["eval/loss"] < np.log(2)
    assert {f"train/{k}" for k in REWARDS} <= set(result.metrics)


@pytest.mark.parametrize("loss_kwargs", [dict(dpo_loss="ipo"), dict(dpo_label_smoothing=0.2)])
def test_ipo_and_conservative_dpo_run(pref_data, loss_kwargs, tmp_path):
    _, data = pref_data
    config = TrainingConfig(
        **testing_data.tiny_config_kwargs(
            str(tmp_path), mode="dpo", steps=2, eval_fraction=0.0, plot=False, **loss_kwargs
        )
    )
    result = Trainer(config, tokenizer=tiny_tokenizer()).train(data)
    assert np.isfinite(result.metrics["train/loss"])


def test_separate_reference_and_full_finetuning(pref_data, tmp_path):
    _, data = pref_data
    cfg = LlamaConfig.preset("tiny")
    ref_dir = str(tmp_path / "reference")
    hf.save_hf_dir(Llama(cfg, rngs=nnx.Rngs(0)), ref_dir)  # the same weights as model_path=random, seed 0
    kwargs = testing_data.tiny_config_kwargs(str(tmp_path), mode="dpo", steps=3, plot=False, use_lora=False, lr=1e-3)
    separate = Trainer(TrainingConfig(**kwargs, dpo_reference=ref_dir), tokenizer=tiny_tokenizer()).train(data)
    copied = Trainer(TrainingConfig(**kwargs), tokenizer=tiny_tokenizer()).train(data)
    for result in (separate, copied):
        assert result.initial_metrics["eval/rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(separate.metrics["eval/loss"], copied.metrics["eval/loss"], rtol=1e-4)
    assert {"config.json", "model.safetensors"} <= set(os.listdir(copied.outputs["model"]))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
