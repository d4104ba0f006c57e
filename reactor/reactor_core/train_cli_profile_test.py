"""`//reactor:train` on different machines: profile defaults for unset flags, clean exits.

A fake GCE metadata server (GCE_METADATA_HOST) makes this machine a spot or on-demand GCP
VM; reactor_core.env.profile then turns checkpoints and auto-resume on, which the CLI
applies only to flags the user left unset and announces in one line.
"""

import sys

import pytest

from reactor_core import env as env_lib
from reactor_core import train_cli
from reactor_core.ckpt.checkpoint import ConfigMismatchError
from reactor_core.dist.preemption import EXIT_PREEMPTED
from reactor_core.gcp.fake_metadata import ON_DEMAND_VM, SPOT_VM, FakeMetadataServer
from reactor_core.train import config as config_lib
from reactor_core.train import trainer as trainer_lib
from reactor_core.train.hooks import Preempted

CPU = env_lib.Environment(kind="cpu", system="Linux", machine="x86_64", cpu_count=2, memory_bytes=24 * 2**30)


@pytest.fixture
def cli(monkeypatch, capsys):
    """run(*flags, raises=None) -> (config the trainer got, stdout); no real training."""
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    monkeypatch.setattr(env_lib, "_cuda_gpus", lambda: ())  # the same profile on a GPU machine
    monkeypatch.setattr(env_lib, "tpu_chip_count", lambda: 0)
    monkeypatch.setattr(env_lib, "DMI_PRODUCT_NAME", "/nonexistent")
    seen = {}

    class FakeTrainer:
        def __init__(self, config, **kwargs):
            seen["config"] = config

        def train(self):
            if seen.get("raise"):
                raise seen["raise"]
            return trainer_lib.TrainResult(
                metrics={}, initial_metrics={}, steps=1, output_dir="/o", outputs={}, data_stats={}, history=[]
            )

    monkeypatch.setattr(trainer_lib, "Trainer", FakeTrainer)

    def run(*flags, raises=None):
        seen["raise"] = raises
        train_cli.FLAGS.unparse_flags()
        train_cli.FLAGS(["train", "--data=/d.jsonl", "--output=/o", *flags])
        train_cli.main(["train"])
        return seen["config"], capsys.readouterr().out

    yield run
    train_cli.FLAGS.unparse_flags()


@pytest.mark.parametrize(("vm", "every"), [(SPOT_VM, 50), (ON_DEMAND_VM, 200)])
def test_gcp_vm_profile_turns_on_checkpoints_and_resume(cli, monkeypatch, vm, every):
    with FakeMetadataServer(vm) as server:
        monkeypatch.setenv("GCE_METADATA_HOST", server.host)
        config, out = cli()
    assert (config.checkpoint.every_n_steps, config.checkpoint.resume) == (every, True)
    assert (config.data.batch_size, config.data.seq_len) == (8, 1024)  # GCP keeps the dataclass sizes
    name = "gcp-cpu-spot" if vm is SPOT_VM else "gcp-cpu"
    assert (
        f"defaults from the {name} profile (flags left unset): --checkpoint_every={every} --checkpoint_resume=true"
        in out
    )


def test_plain_cpu_profile_does_not_auto_resume(cli, monkeypatch):
    monkeypatch.setattr(env_lib, "detect", lambda: CPU)
    config, out = cli()
    assert (config.checkpoint.every_n_steps, config.checkpoint.resume) == (200, False)
    assert "defaults from the cpu profile (flags left unset): --checkpoint_every=200 --checkpoint_resume=false" in out


def test_plain_cpu_profile_defaults_a_step_of_seconds(cli, monkeypatch):
    # 8 x 1,024 tokens cost ~a minute a step on 2 cores; the profile's 2 x 512 cost seconds.
    monkeypatch.setattr(env_lib, "detect", lambda: CPU)
    config, out = cli()
    assert (config.data.batch_size, config.data.seq_len) == (2, 512)
    assert "--batch_size=2 --seq_len=512" in out
    config, out = cli("--batch_size=8")
    assert (config.data.batch_size, config.data.seq_len) == (8, 512) and "--batch_size" not in out


def test_flags_and_config_file_win_over_the_profile(cli, monkeypatch, tmp_path):
    with FakeMetadataServer(SPOT_VM) as server:
        monkeypatch.setenv("GCE_METADATA_HOST", server.host)
        config, out = cli("--checkpoint_every=7", "--nocheckpoint_resume")
        assert (config.checkpoint.every_n_steps, config.checkpoint.resume) == (7, False)
        assert "defaults from" not in out
        path = tmp_path / "config.json"
        path.write_text(config_lib.TrainingConfig(checkpoint_every=5).to_json())
        config, out = cli(f"--config={path}")
    assert (config.checkpoint.every_n_steps, config.checkpoint.resume) == (5, True)  # resume: still the profile's
    assert "--checkpoint_resume=true" in out and "--checkpoint_every" not in out


def test_preempted_exits_143_with_one_line(cli, monkeypatch, capsys):
    monkeypatch.setattr(env_lib, "detect", lambda: CPU)
    notice = Preempted(5, "signal SIGTERM", "gs://b/run", 5)
    with pytest.raises(SystemExit) as exit_info:
        cli("--checkpoint_every=2", raises=notice)
    assert exit_info.value.code == EXIT_PREEMPTED == 143
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("reactor:")]
    assert printed == [
        "reactor: preempted after step 5 (signal SIGTERM); checkpoint step 5 saved in gs://b/run; run again to resume"
    ]


def test_incompatible_checkpoint_is_a_clean_error(cli, monkeypatch):
    monkeypatch.setattr(env_lib, "detect", lambda: CPU)
    mismatch = ConfigMismatchError("Refusing to resume from /o/checkpoints step 4: ... lora.rank: checkpoint=8, now=4")
    with pytest.raises(SystemExit, match=r"^error: Refusing to resume.*lora\.rank"):
        cli("--checkpoint_every=2", raises=mismatch)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
