"""Two processes on localhost (CPU, gloo) train through `//reactor:train` as one job.

Each process runs train_cli.py with --coordinator_address/--num_processes/--process_id and
has one CPU device; the global mesh is fsdp:2 over both. The result must equal one process
with 2 simulated devices (XLA_FLAGS from the BUILD target) on the same mesh: per-step
losses within rtol 2e-5 and the final LoRA adapter within atol 5e-5 (see
trainer_mesh_test.py for why LoRA's tolerance is looser than the loss's). Process 0 alone
writes the run directory; process 1 ran the same steps (its printed final loss equals
process 0's) but wrote nothing.
"""

import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # run directly
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import json
import re

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from reactor_core import train_cli
from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.dist.reference_train import free_port, run_together
from reactor_core.train import testing_data
from reactor_core.train.config import TrainingConfig
from reactor_core.train.trainer import Trainer

STEPS = 3
# Flat config fields shared by the CLI processes and the in-process reference.
FIELDS = {
    "model_name": "tiny",
    "model_path": "random",
    "dtype": "float32",
    "lora_rank": 8,
    "lora_targets": "all-linear",
    "lr": 1e-2,
    "warmup_steps": 2,
    "seq_len": 32,
    "batch_size": 8,
    "eval_fraction": 0.0,
    "steps": STEPS,
    "log_every": 1,
    "checkpoint_every": 0,
    "progress": False,
    "mesh_strategy": "fsdp",
}
MESH = "data:1,fsdp:2,tensor:1"


def _flag(field, value) -> str:
    name = {flat: flag for flag, flat in train_cli.flag_to_field().items()}[field]  # model_name -> model
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    data = testing_data.write_chat(str(tmp / "train.jsonl"), n=48)
    tokenizer_dir = str(tmp / "tokenizer")
    tiny_tokenizer().save_pretrained(tokenizer_dir)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    env.pop("BUILD_WORKING_DIRECTORY", None)
    cmds = []
    for i in range(2):
        args = [_flag(k, v) for k, v in FIELDS.items()]
        args += [f"--data={data}", f"--output={tmp / f'out{i}'}", f"--tokenizer={tokenizer_dir}", f"--mesh={MESH}"]
        args += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"]
        cmds.append([sys.executable, train_cli.__file__, *args])
    outputs = []
    for code, out in run_together(cmds, env):
        assert code == 0, out[-4000:]
        outputs.append(out)
    return tmp, data, outputs


@pytest.fixture(scope="module")
def one_process(two_processes, tmp_path_factory):
    _, data, _ = two_processes
    assert jax.device_count() == 2 and jax.process_count() == 1
    out = tmp_path_factory.mktemp("reference")
    config = TrainingConfig(**FIELDS, mesh=MESH, output_dir=str(out / "run"))
    return Trainer(config, tokenizer=tiny_tokenizer()).train(data)


def _final_loss(output: str) -> float:
    return float(re.search(r"train/loss = (\S+)", output).group(1))


def test_two_processes_train_like_one_process_on_two_devices(two_processes, one_process):
    tmp, _, outputs = two_processes
    assert "jax.distributed up: process 0 of 2" in outputs[0] and "process 1 of 2" in outputs[1]
    records = [json.loads(line) for line in (tmp / "out0" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    ref = [r["train/loss"] for r in one_process.history if "train/loss" in r]
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, ref, rtol=2e-5)
    assert _final_loss(outputs[1]) == _final_loss(outputs[0])  # process 1 ran the same steps

    adapter = load_file(str(tmp / "out0" / "adapter" / "adapter_model.safetensors"))
    expected = load_file(os.path.join(one_process.outputs["adapter"], "adapter_model.safetensors"))
    assert sorted(adapter) == sorted(expected) and len(adapter) == 2 * 7 * 2  # A and B, 7 targets, 2 layers
    for name in expected:
        np.testing.assert_allclose(adapter[name], expected[name], atol=5e-5, err_msg=name)


def test_only_process_zero_writes_the_run_directory(two_processes):
    tmp, _, _ = two_processes
    written = set(os.listdir(tmp / "out0"))
    assert {"config.json", "metrics.jsonl", "loss_curve.png", "adapter", "tensorboard"} <= written
    assert not (tmp / "out1").exists() or not os.listdir(tmp / "out1")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
