"""`bazel run //reactor:train`: flags reach every TrainingConfig field; paths resolve like bazel run."""

import sys

import pytest

from reactor_core import env as env_lib
from reactor_core import train_cli
from reactor_core.train import config as config_lib
from reactor_core.train import trainer as trainer_lib


@pytest.fixture
def parse(monkeypatch):
    monkeypatch.setenv("BUILD_WORKING_DIRECTORY", "/ws")

    def run(*args):
        train_cli.FLAGS.unparse_flags()
        train_cli.FLAGS(["train", *args])
        return train_cli.config_from_flags()

    yield run
    train_cli.FLAGS.unparse_flags()


def test_every_config_field_has_a_flag():
    assert sorted(train_cli.flag_to_field().values()) == sorted(config_lib.FLAT_FIELDS)
    for flag in train_cli.flag_to_field():
        assert flag in train_cli.FLAGS


def test_issue_flags(parse):
    config = parse(
        "--model=prime-7b-chat",
        "--data=data/train.jsonl",
        "--output=runs/a",
        "--steps=5",
        "--lr=1e-4",
        "--lora_rank=8",
        "--batch_size=2",
        "--seq_len=64",
        "--eval_data=/abs/eval.jsonl",
        "--mode=dpo",
        "--lora_targets=q,v",
        "--quant=nf4",
        "--nopack",
        "--force",
    )
    assert config.model.name == "prime-7b-chat"
    assert config.data.path == "/ws/data/train.jsonl" and config.data.eval_path == "/abs/eval.jsonl"
    assert config.run.output_dir == "/ws/runs/a"
    assert (config.run.max_steps, config.optim.learning_rate, config.lora.rank) == (5, 1e-4, 8)
    assert (config.data.batch_size, config.data.seq_len, config.data.pack) == (2, 64, False)
    assert (config.run.mode, config.lora.targets, config.quant.mode, config.run.force) == (
        "dpo",
        ("q_proj", "v_proj"),
        "nf4",
        True,
    )


def test_unset_flags_keep_defaults(parse):
    default_output = config_lib.TrainingConfig().run.output_dir
    assert parse() == config_lib.TrainingConfig(output_dir=f"/ws/{default_output}")


def test_config_file_then_flags(parse, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(config_lib.TrainingConfig(lora_rank=4, lr=3e-4, model_name="tiny").to_json())
    config = parse(f"--config={path}", "--lr=1e-3")
    assert (config.lora.rank, config.optim.learning_rate, config.model.name) == (4, 1e-3, "tiny")


def test_catalogue_names_and_urls_are_not_paths(parse):
    config = parse("--dpo_reference=prime-135m-chat", "--checkpoint_dir=gs://bucket/run", "--model_path=random")
    assert config.dpo.reference == "prime-135m-chat"
    assert config.checkpoint.dir == "gs://bucket/run"
    assert config.model.path == "random"


def test_mesh_flag(parse):
    config = parse("--mesh=data:2,fsdp:2,tensor:2", "--mesh_strategy=fsdp_tp")
    assert config.mesh == config_lib.MeshConfig(data=2, fsdp=2, tensor=2, strategy="fsdp_tp")
    config = parse("--mesh=data:2,fsdp:-1", "--mesh_fsdp=4")  # a flat flag overrides one axis
    assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor, config.mesh.strategy) == (2, 4, 1, "fsdp")
    assert parse("--mesh_strategy=dp").mesh == config_lib.MeshConfig(strategy="dp")


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--mesh=data:2,pipe:2", ["--mesh=data:2,pipe:2", "bad entry 'pipe:2'"]),
        ("--mesh=tensor:2", ["--mesh=tensor:2", "MeshConfig.tensor", "--mesh_strategy=fsdp_tp"]),
        ("--mesh=data:x", ["--mesh=data:x", "size of 'data' must be an int"]),
    ],
)
def test_bad_mesh_flag_names_the_flag(parse, flag, words):
    with pytest.raises(ValueError) as e:
        parse(flag)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_multihost_flags_then_env(parse, monkeypatch):
    for prefix in ("REACTOR", "JAX"):
        for name in ("COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID"):
            monkeypatch.delenv(f"{prefix}_{name}", raising=False)
    parse()
    assert not train_cli.distributed_from_flags().explicit  # nothing set: one process
    parse("--coordinator_address=10.0.0.2:8476", "--num_processes=4", "--process_id=3")
    cfg = train_cli.distributed_from_flags()
    assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("10.0.0.2:8476", 4, 3)
    monkeypatch.setenv("REACTOR_COORDINATOR_ADDRESS", "10.0.0.9:1234")
    monkeypatch.setenv("REACTOR_NUM_PROCESSES", "2")
    monkeypatch.setenv("REACTOR_PROCESS_ID", "1")
    parse("--process_id=0")  # a flag wins over its variable
    cfg = train_cli.distributed_from_flags()
    assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("10.0.0.9:1234", 2, 0)
    parse("--process_id=5")
    with pytest.raises(ValueError, match=r"--process_id.*process_id must be in \[0, 2\)"):
        train_cli.distributed_from_flags()


def test_bad_multihost_flags_exit_before_training(parse):
    train_cli.FLAGS.unparse_flags()
    train_cli.FLAGS(["train", "--coordinator_address=10.0.0.2:8476", "--data=x.jsonl"])
    with pytest.raises(SystemExit, match="--coordinator_address.*missing"):
        train_cli.main(["train"])


def test_bad_value_exits_with_the_field(parse):
    with pytest.raises(SystemExit, match="optim.schedule"):
        train_cli.FLAGS.unparse_flags()
        train_cli.FLAGS(["train", "--schedule=step"])
        train_cli.main(["train"])


def test_large_preset_refused_on_cpu(parse, monkeypatch):
    cpu = env_lib.Environment(kind="cpu", system="Linux", machine="x86_64", cpu_count=2, memory_bytes=24 * 2**30)
    monkeypatch.setattr(env_lib, "detect", lambda: cpu)
    train_cli.FLAGS(["train", "--model=prime-7b-chat", "--data=x.jsonl"])
    with pytest.raises(SystemExit, match="prime-135m-chat"):
        train_cli.main(["train"])


def test_main_trains_and_prints(parse, monkeypatch, capsys):
    seen = {}

    class FakeTrainer:
        def __init__(self, config):
            seen["config"] = config

        def train(self):
            return trainer_lib.TrainResult(
                metrics={"eval/loss": 1.5},
                initial_metrics={},
                steps=3,
                output_dir="/ws/out",
                outputs={"adapter": "/ws/out/adapter"},
                data_stats={},
                history=[],
            )

    monkeypatch.setattr(trainer_lib, "Trainer", FakeTrainer)
    train_cli.FLAGS(["train", "--data=d.jsonl", "--output=out", "--steps=3"])
    train_cli.main(["train"])
    assert seen["config"].data.path == "/ws/d.jsonl"
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "eval/loss = 1.5" in out and "/ws/out/adapter" in out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
