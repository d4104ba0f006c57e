"""The spot-VM launcher: dry-run request, the startup script's outcomes, the re-create loop."""

import json
import stat
import subprocess
import sys

import pytest

from reactor_core.ckpt.gcs import Markers, make_client
from reactor_core.ckpt.gcs_emulator import LocalGcs
from reactor_core.gcp import cli, launcher

ARGS = [
    "--project=proj", "--model=prime-135m-chat", "--data=gs://bkt/data/train.jsonl",
    "--checkpoint_dir=gs://bkt/runs/r1", "--name=reactor-r1",
]  # fmt: skip


def _dry_run(capsys, *extra):
    assert cli.main(["launch", *ARGS, "--dry-run", *extra]) == 0  # --train_args swallows the rest
    out = capsys.readouterr().out
    head, _, script = out.partition("---- startup-script ----\n")
    first, _, body = head.partition("\n")
    return first, json.loads(body), script


def test_dry_run_prints_spot_request_and_script(capsys):
    first, body, script = _dry_run(capsys, "--spot", "--train_args", "--lora_rank=8", "--steps=1000")
    assert first == "POST https://compute.googleapis.com/compute/v1/projects/proj/zones/us-central1-a/instances"
    assert body["name"] == "reactor-r1"
    assert body["scheduling"]["provisioningModel"] == "SPOT"
    assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n2-standard-8"
    assert body["metadata"]["items"] == [{"key": "startup-script", "value": script}]
    resume = (
        'bazel run //reactor:train -- --model=prime-135m-chat --data="$WORK/data/"train.jsonl '
        '--output="$WORK/run" --checkpoint_dir=gs://bkt/runs/r1 --lora_rank=8 --steps=1000'
    )
    assert resume in script
    assert 'gcloud storage cp gs://bkt/data/train.jsonl "$WORK/data/"' in script
    assert "apt-get install -y -q bazel-bootstrap" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid bash


def test_on_demand_and_gpu(capsys):
    _, body, _ = _dry_run(capsys, "--no-spot", "--accelerator_type=nvidia-l4", "--accelerator_count=1")
    assert "provisioningModel" not in body["scheduling"]
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"  # required with GPUs
    assert body["guestAccelerators"][0]["acceleratorType"].endswith("acceleratorTypes/nvidia-l4")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"checkpoint_dir": "/tmp/x"}, "checkpoint_dir must be gs://"),
        ({"name": "Bad_Name"}, "not a valid instance name"),
        ({"accelerator_type": "nvidia-l4"}, "go together"),
        ({"project": ""}, "project is empty"),
    ],
)
def test_config_validation(changes, message):
    kw = dict(model="m", data="gs://b/d", checkpoint_dir="gs://b/c", project="p")
    with pytest.raises(ValueError, match=message):
        launcher.LaunchConfig(**{**kw, **changes})


def _fake_bin(tmp_path, train_exit: int):
    """gcloud/apt-get/git/bazel/shutdown stand-ins that log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    scripts = {
        "gcloud": f'echo "gcloud $*" >> {calls}; if [ "$2" = ls ]; then exit 1; fi; '
        f'if [ "$2" = cp ] && [ "$3" = - ]; then cat > {tmp_path}/marker-$(basename "$4"); fi',
        "apt-get": f'echo "apt-get $*" >> {calls}',
        "git": f'echo "git $*" >> {calls}; mkdir -p "${{@: -1}}"',  # clone's last arg: the target
        "bazel": f'echo "bazel $*" >> {calls}; exit {train_exit}',
        "shutdown": f'echo "shutdown $*" >> {calls}',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir, calls


@pytest.mark.parametrize("train_exit, marker", [(0, "DONE"), (143, None), (1, "FAILED")])
def test_startup_script_outcomes(tmp_path, train_exit, marker):
    cfg = launcher.LaunchConfig(model="m", data="gs://b/d", checkpoint_dir="gs://b/runs/x", project="p")
    bin_dir, calls = _fake_bin(tmp_path, train_exit)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REACTOR_HOME": str(tmp_path / "src")}
    env.update(REACTOR_LOG=str(tmp_path / "log"), REACTOR_WORK=str(tmp_path / "work"))
    script = launcher.startup_script(cfg)
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)
    log = calls.read_text()
    work = tmp_path / "work"
    assert f"bazel run //reactor:train -- --model=m --data={work}/data/d --output={work}/run" in log
    assert "--checkpoint_dir=gs://b/runs/x" in log
    assert (f"gcloud storage cp -r {work}/run gs://b/runs/x/output" in log) == (marker == "DONE")
    markers = sorted(p.name for p in tmp_path.glob("marker-*"))
    assert markers == ([f"marker-{marker}"] if marker else [])
    assert ("shutdown" in log) == (marker is not None)


class FakeCompute:
    """Instances in memory; `preempt()` deletes the VM like GCE's DELETE termination action."""

    def __init__(self):
        self.vms, self.inserts, self.deletes = {}, 0, 0

    def insert(self, zone, body):
        assert body["scheduling"]["provisioningModel"] == "SPOT"
        self.vms[body["name"]] = "RUNNING"
        self.inserts += 1

    def status(self, zone, name):
        return self.vms.get(name)

    def delete(self, zone, name):
        self.vms.pop(name, None)
        self.deletes += 1


def test_watch_recreates_after_preemption_until_done():
    cfg = launcher.LaunchConfig(
        model="m", data="gs://ckpt/d", checkpoint_dir="gs://ckpt/runs/w", project="p", name="w1"
    )
    api = FakeCompute()
    ticks = []

    def sleep(_):
        # The world between two polls: preempted twice, then the run finishes.
        ticks.append(len(ticks))
        if len(ticks) in (2, 4):
            api.vms.pop("w1")
        if len(ticks) == 6:
            api.vms["w1"] = "TERMINATED"  # the VM shut itself down after writing DONE
            make_client().bucket("ckpt").blob("runs/w/DONE").upload_from_string("done")

    with LocalGcs(bucket="ckpt"):
        result = launcher.watch(cfg, api, Markers(), poll_s=0, sleep=sleep)
    assert (result.outcome, result.launches) == ("DONE", 3)
    assert api.vms == {} and api.deletes == 1


def test_watch_gives_up():
    cfg = launcher.LaunchConfig(model="m", data="gs://ckpt/d", checkpoint_dir="gs://ckpt/runs/g", project="p")
    api = FakeCompute()

    class NoMarkers:
        def exists(self, url):
            return False

    result = launcher.watch(cfg, api, NoMarkers(), poll_s=0, max_launches=2, sleep=lambda _: api.vms.clear())
    assert (result.outcome, result.launches) == ("GAVE_UP", 2)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
