"""Trainer end to end on the tiny model: outputs, hooks, eval, checkpoints, data wiring."""

import json
import math
import os
import sys

import pytest

from reactor_core.data.schema import DataError
from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.train import testing_data
from reactor_core.train.config import TrainingConfig
from reactor_core.train.hooks import Hook
from reactor_core.train.trainer import Trainer


class Recorder(Hook):
    def __init__(self, every):
        self.every_n_steps = every
        self.steps = []
        self.events = []

    def start(self, run):
        self.events.append("start")

    def after_step(self, run):
        self.steps.append(run.step)

    def end(self, run):
        self.events.append("end")


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("sft"))
    data = testing_data.write_chat(os.path.join(tmp, "train.jsonl"))
    config = TrainingConfig(
        **testing_data.tiny_config_kwargs(
            tmp,
            steps=12,
            grad_accum=2,
            pack=True,
            lora_targets="all-linear",
            lora_dropout=0.05,
            eval_every=6,
            checkpoint_every=6,
            export_merged=True,
        )
    )
    recorder = Recorder(5)
    result = Trainer(config, tokenizer=tiny_tokenizer(), hooks=[recorder]).train(data)
    return config, result, recorder, data


def test_train_returns_metrics_and_lowers_eval_loss(sft):
    _, result, _, _ = sft
    assert result.steps == 12
    before, after = result.initial_metrics["eval/loss"], result.metrics["eval/loss"]
    assert after < before - 0.15, (before, after)  # a random tiny base learns slowly through LoRA
    assert result.metrics["eval/perplexity"] == pytest.approx(math.exp(after), rel=1e-6)
    assert result.metrics["train/tokens_per_sec"] > 0
    assert result.data_stats["examples"] > 0


def test_resolved_config_written_to_run_dir(sft):
    config, result, _, data = sft
    saved = TrainingConfig.load(result.outputs["config"])
    assert saved == config.replace(data_path=data)
    assert os.path.dirname(result.outputs["config"]) == config.run.output_dir


def test_metrics_jsonl_tensorboard_and_plot(sft):
    _, result, _, _ = sft
    records = [json.loads(line) for line in open(result.outputs["metrics"])]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    eval_steps = [r["step"] for r in records if "eval/loss" in r]
    assert train_steps == [4, 8, 12] and eval_steps == [0, 6, 12]
    assert all({"train/lr", "train/grad_norm", "train/tokens_per_sec"} <= set(r) for r in records if "train/loss" in r)
    events = os.listdir(result.outputs["tensorboard"])
    assert any(name.startswith("events.out.tfevents") for name in events)
    with open(result.outputs["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_hooks_run_every_n_and_at_the_end(sft):
    _, _, recorder, _ = sft
    assert recorder.steps == [5, 10, 12]
    assert recorder.events == ["start", "end"]


def test_exports_and_checkpoints(sft):
    _, result, _, _ = sft
    assert sorted(os.listdir(result.outputs["adapter"])) == ["adapter_config.json", "adapter_model.safetensors"]
    assert {"config.json", "model.safetensors"} <= set(os.listdir(result.outputs["merged"]))
    steps = sorted(int(d) for d in os.listdir(result.outputs["checkpoints"]) if d.isdigit())
    assert steps == [6, 12]


def test_checkpoint_restores_train_state(sft):
    import jax
    import numpy as np

    from reactor_core.train.checkpoint_hook import restore_latest

    config, result, _, data = sft
    step, state, extra = restore_latest(result.outputs["checkpoints"], None, config.replace(data_path=data))
    assert step == 12 and int(state["step"]) == 12
    assert extra["data"]["kind"] == "sft" and extra["data"]["position"] > 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_bad_lines_name_file_and_line_or_are_skipped(tmp_path):
    data = testing_data.write_chat(str(tmp_path / "bad.jsonl"), n=40, bad_line=7)
    kwargs = testing_data.tiny_config_kwargs(str(tmp_path), eval_fraction=0.0, plot=False, num_epochs=2)
    with pytest.raises(DataError, match=r"bad\.jsonl:7"):
        Trainer(TrainingConfig(**kwargs), tokenizer=tiny_tokenizer()).train(data)
    trainer = Trainer(TrainingConfig(**kwargs, skip_bad_lines=True), tokenizer=tiny_tokenizer())
    result = trainer.train(data)
    assert result.data_stats["bad_lines"] == 1 and result.data_stats["examples"] == 39
    assert result.steps == math.ceil(39 * 2 / 8)  # num_epochs -> steps (one example per row)
    assert "eval/loss" not in result.metrics
    # A second call keeps training the same adapters.
    again = trainer.train(data)
    assert again.metrics["train/loss"] < result.initial_metrics["train/loss"]


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_qlora_trains_and_exports(tmp_path, quant):
    data = testing_data.write_chat(str(tmp_path / "train.jsonl"), n=64)
    kwargs = testing_data.tiny_config_kwargs(
        str(tmp_path), quantize=quant, quant_block_size=32, steps=6, log_every=1, plot=False, export_merged=True
    )
    result = Trainer(TrainingConfig(**kwargs), tokenizer=tiny_tokenizer()).train(data)
    losses = [r["train/loss"] for r in result.history if "train/loss" in r]
    assert losses[-1] < losses[0]
    assert result.metrics["eval/loss"] < result.initial_metrics["eval/loss"]
    assert {"config.json", "model.safetensors"} <= set(os.listdir(result.outputs["merged"]))


def test_no_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="No training data"):
        Trainer(TrainingConfig(**testing_data.tiny_config_kwargs(str(tmp_path))), tokenizer=tiny_tokenizer()).train()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
