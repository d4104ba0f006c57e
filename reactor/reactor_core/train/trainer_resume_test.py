"""Exact resume through the real CLI (`python -m reactor_core.train_cli`), killed and restarted.

One LoRA SFT run of the tiny random model (dropout on, so the RNG state matters; 3 epochs
over a shuffled file, so the data position matters) is killed at several points and
restarted each time with the same command:

  TERM           SIGTERM after a step: saves synchronously, exits 143 (EXIT_PREEMPTED)
  KILL           SIGKILL a few steps after a periodic save started: those steps are re-done
  KILL_ON_SAVE   SIGKILL as soon as an asynchronous save has started
  TERM_THEN_KILL SIGTERM, then SIGKILL while the preemption save is being written
  METADATA       the (fake) GCE metadata server answers instance/preempted=TRUE: exits 143

The final adapter and the per-step loss sequence (metrics.jsonl, exact JSON floats) must be
bitwise identical to an uninterrupted run; losses of steps re-done after a kill must equal
the ones the killed process logged. A second test does the same with gs:// checkpoints on a
local GCS server and resumes on a "fresh machine" (a new, empty staging directory).
"""

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from reactor_core.ckpt import gcs
from reactor_core.ckpt.checkpoint import ConfigMismatchError
from reactor_core.ckpt.gcs_emulator import LocalGcs
from reactor_core.data.testing_tokenizers import tiny_tokenizer
from reactor_core.dist.preemption import EXIT_PREEMPTED
from reactor_core.gcp.fake_metadata import SPOT_VM, FakeMetadataServer
from reactor_core.train import testing_data
from reactor_core.train.checkpoint_hook import ResumeRefused, checkpoint_dir
from reactor_core.train.config import TrainingConfig
from reactor_core.train.hooks import Hook, Preempted
from reactor_core.train.trainer import Trainer

STEPS, EVERY, DEVICES = 24, 3, 2
PLAN = ["TERM", "KILL", "KILL_ON_SAVE", "TERM_THEN_KILL", "METADATA"]
TIMEOUT_S = 240
CACHE_DIR = os.path.join(os.environ.get("TEST_TMPDIR", "/tmp"), "reactor_resume_jax_cache")
RESUMED = re.compile(r"resumed from \S+ step (\d+)")


def _cmd(root, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "reactor_core.train_cli",
        "--model=tiny", "--model_path=random", f"--tokenizer={root / 'tokenizer'}", f"--data={root / 'train.jsonl'}",
        f"--output={root / name}", "--dtype=float32", "--lora_rank=4", "--lora_dropout=0.1", "--lr=1e-2",
        "--warmup_steps=2", "--seq_len=64", "--batch_size=8", "--nopack", "--eval_fraction=0", "--log_every=1",
        "--noprogress", "--noplot", f"--steps={STEPS}", f"--checkpoint_every={EVERY}", "--checkpoint_keep=2",
        "--checkpoint_resume", *extra,
    ]  # fmt: skip


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GCE_METADATA_HOST"}
    env.update(PYTHONPATH=os.pathsep.join(sys.path), JAX_PLATFORMS="cpu")
    # Two CPU devices: the default mesh (fsdp:-1) shards the state, so every resume is a sharded restore.
    env.update(XLA_FLAGS=f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip())
    # Restarts reuse the first run's compiled steps (the same executables: same bits, less CPU).
    env.update(JAX_COMPILATION_CACHE_DIR=CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return {**env, **extra}


class Proc:
    """A training subprocess whose output lines arrive on a queue (so kills can be timed)."""

    def __init__(self, cmd, env):
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8", errors="replace"
        )
        self.lines: list[str] = []
        self.closed = False
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.proc.stdout:
                self._queue.put(line.rstrip("\n"))
        finally:
            self._queue.put(None)

    def next_line(self) -> str | None:
        """The next output line; None once the process has closed its output."""
        if self.closed:
            return None
        line = self._queue.get(timeout=TIMEOUT_S)
        if line is None:
            self.closed = True
        else:
            self.lines.append(line)
        return line

    def finish(self) -> int:
        while self.next_line() is not None:
            pass
        return self.proc.wait(timeout=TIMEOUT_S)

    def kill(self, sig):
        self.proc.send_signal(sig)


def _step_of(line: str, marker: str) -> int | None:
    """The step number after `marker` in a log line, e.g. 'checkpoint: saving step 6 to ...'."""
    match = re.search(re.escape(marker) + r"(\d+)", line)
    return int(match.group(1)) if match else None


def _run_with_kill(cmd, plan: str, offset: int, env) -> tuple[int, str, list[str]]:
    proc = Proc(cmd, env)
    resumed = 0
    event = "the metadata server says instance/preempted=TRUE" if plan == "METADATA" else "ran to the end"
    try:
        while (line := proc.next_line()) is not None:
            if match := RESUMED.search(line):
                resumed = int(match.group(1))
            saving = _step_of(line, "checkpoint: saving step ")
            if plan == "KILL_ON_SAVE" and saving is not None and saving > resumed:
                proc.kill(signal.SIGKILL)
                event = f"SIGKILL during the async save of step {saving}"
                break
            if plan in ("TERM", "KILL", "TERM_THEN_KILL") and saving is not None and saving >= resumed + offset:
                if plan == "KILL":
                    time.sleep(0.05 * offset)  # a few steps past the save
                    proc.kill(signal.SIGKILL)
                    event = f"SIGKILL some steps after the save of step {saving}"
                    break
                proc.kill(signal.SIGTERM)
                event = f"SIGTERM after the save of step {saving}"
                if plan == "TERM":
                    break
                plan = "KILL_IN_PREEMPTION_SAVE"
            writing = _step_of(line, "preempted: writing step ")
            if plan == "KILL_IN_PREEMPTION_SAVE" and writing is not None:
                proc.kill(signal.SIGKILL)
                event += f", SIGKILL while its preemption save of step {writing} is written"
                break
        code = proc.finish()
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
    return code, f"resumed at {resumed}: {event} -> exit {code}", proc.lines


def _records(run_dir) -> dict[int, str]:
    """step -> train/loss as the exact hex of the logged float."""
    out = {}
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # torn by SIGKILL; the restart drops it
            continue
        if "train/loss" in record:
            assert record["step"] not in out, f"step {record['step']} logged twice in {path}"
            out[record["step"]] = float(record["train/loss"]).hex()
    return out


def _adapter(run_dir) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _assert_identical(run_dir, reference_dir):
    got, ref = _records(run_dir), _records(reference_dir)
    assert sorted(ref) == list(range(1, STEPS + 1))
    assert got == ref
    a, b = _adapter(run_dir), _adapter(reference_dir)
    assert sorted(a) == sorted(b) and a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    testing_data.write_chat(str(root / "train.jsonl"), n=64)
    tiny_tokenizer().save_pretrained(str(root / "tokenizer"))
    return root


@pytest.fixture(scope="module")
def reference(root):
    """The uninterrupted run (started once, shared by both tests)."""
    proc = Proc(_cmd(root, "reference"), _env())
    yield proc, root / "reference"
    if proc.proc.poll() is None:
        proc.proc.kill()


def _reference_done(reference):
    proc, run_dir = reference
    if proc.proc.returncode is None:
        assert proc.finish() == 0, "\n".join(proc.lines[-30:])
    return run_dir


def test_killed_and_resumed_cli_run_is_bitwise_identical(root, reference):
    rng = random.Random(5)
    cmd = _cmd(root, "killed")
    history, seen = [], {}
    mid_save = 0
    with FakeMetadataServer({**SPOT_VM, "instance/preempted": "TRUE"}) as metadata:
        for plan in PLAN:
            env = _env(GCE_METADATA_HOST=metadata.host) if plan == "METADATA" else _env()
            code, line, output = _run_with_kill(cmd, plan, rng.randint(1, 4), env)
            partial = [n for n in os.listdir(root / "killed" / "checkpoints") if "tmp" in n]
            mid_save += bool(partial)
            history.append(f"{plan}: {line}, partial checkpoint dirs left: {len(partial)}")
            print(history[-1], flush=True)
            for step, loss in _records(root / "killed").items():
                seen.setdefault(step, set()).add(loss)
            if plan in ("TERM", "METADATA"):
                assert code == EXIT_PREEMPTED, history + output[-20:]
                assert sum("reactor: preempted after step" in x for x in output) == 1, output[-5:]
            else:
                assert code == -signal.SIGKILL, history + output[-20:]
            if plan == "METADATA":
                assert any("instance/preempted=TRUE" in x for x in output), output[-20:]
            # A signal landing inside a log write must not break logging (it did once).
            assert not any("Logging error" in x for x in output), history + output[-40:]
        code, line, output = _run_with_kill(cmd, "NONE", 0, _env())
    history.append(f"final: {line}")
    print(f"\n{len(PLAN)} kill points:\n  " + "\n  ".join(history))
    assert code == 0, history + output[-20:]
    assert mid_save >= 1, history  # at least one kill really landed inside a save
    reference_dir = _reference_done(reference)
    _assert_identical(root / "killed", reference_dir)
    ref = _records(reference_dir)
    for step, losses in seen.items():  # steps logged by a killed process and re-done later: same bits
        assert losses == {ref[step]}, (step, losses, ref[step])


def test_gcs_run_resumes_on_a_fresh_machine(root, reference):
    with LocalGcs(bucket="runs") as server:
        url = "gs://runs/tiny"
        # Local keep-N above the run's checkpoint count: on a slow (busy) machine the uploader
        # lags behind training, and a step deleted locally before its upload is skipped.
        keep = f"--checkpoint_keep={STEPS // EVERY + 1}"
        cmd = _cmd(root, "gcs_vm1", f"--checkpoint_dir={url}", keep)
        env = _env(STORAGE_EMULATOR_HOST=server.endpoint, REACTOR_CHECKPOINT_STAGING=str(root / "staging_vm1"))
        proc = Proc(cmd, env)
        uploaded = 0
        try:
            while (line := proc.next_line()) is not None:
                found = re.search(r"Uploaded step (\d+) ", line)
                if found and int(found.group(1)) < STEPS:  # a mid-run step is in the bucket: kill the VM
                    uploaded = int(found.group(1))
                    proc.kill(signal.SIGKILL)
                    break
            assert proc.finish() == -signal.SIGKILL, proc.lines[-20:]
        finally:
            if proc.proc.poll() is None:
                proc.proc.kill()
        complete = gcs.CheckpointMirror(url, str(root / "unused")).complete_steps()
        assert complete and max(complete) >= uploaded, complete
        # A fresh machine: empty staging disk, new output directory; only the bucket survives.
        cmd = _cmd(root, "gcs_vm2", f"--checkpoint_dir={url}", keep)
        env = _env(STORAGE_EMULATOR_HOST=server.endpoint, REACTOR_CHECKPOINT_STAGING=str(root / "staging_vm2"))
        code, line, output = _run_with_kill(cmd, "NONE", 0, env)
        assert code == 0, output[-20:]
        assert f"resumed at {max(complete)}" in line, line
        assert gcs.CheckpointMirror(url, str(root / "unused")).latest_complete_step() == STEPS
    reference_dir = _reference_done(reference)
    # vm2's metrics.jsonl starts at the resumed step; the loss sequence continues vm1's exactly.
    ref = _records(reference_dir)
    vm1, vm2 = _records(root / "gcs_vm1"), _records(root / "gcs_vm2")
    assert {s: ref[s] for s in vm1} == vm1
    assert vm2 == {s: ref[s] for s in range(max(complete) + 1, STEPS + 1)}
    a, b = _adapter(root / "gcs_vm2"), _adapter(reference_dir)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


class SigtermAt(Hook):
    """Sends this process SIGTERM after step `step` (what a spot VM gets before it stops)."""

    def __init__(self, step: int):
        self.step = step

    def after_step(self, run):
        if run.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_in_process_preemption_refusals_and_extension(tmp_path):
    data = testing_data.write_chat(str(tmp_path / "train.jsonl"), n=32)
    kw = testing_data.tiny_config_kwargs(
        str(tmp_path), steps=4, checkpoint_every=2, eval_fraction=0.0, plot=False, log_every=4, lora_dropout=0.1
    )
    config = TrainingConfig(**kw)
    assert checkpoint_dir(config, "rel") == os.path.abspath("rel/checkpoints")
    assert checkpoint_dir(config.replace(checkpoint_dir="gs://b/r"), "rel") == "gs://b/r"  # never abspath'd

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as info:
        Trainer(config, tokenizer=tiny_tokenizer(), hooks=[SigtermAt(3)]).train(data)
    assert (info.value.step, info.value.checkpoint_step, info.value.reason) == (3, 3, "signal SIGTERM")
    metrics = tmp_path / "run" / "metrics.jsonl"
    # The partial log window (steps 1-3) was flushed before the exit.
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [3]
    assert signal.getsignal(signal.SIGTERM) == handler  # the watcher is gone again

    with pytest.raises(ConfigMismatchError, match=r"lora\.rank: checkpoint=8, now=4"):
        Trainer(config.replace(lora_rank=4), tokenizer=tiny_tokenizer()).train(data)
    with pytest.raises(ResumeRefused, match="--checkpoint_resume"):
        Trainer(config.replace(checkpoint_resume=False), tokenizer=tiny_tokenizer()).train(data)

    done = Trainer(config, tokenizer=tiny_tokenizer()).train(data)  # resumes at 3, ends at 4
    assert done.steps == 4 and [r["step"] for r in done.history] == [3, 4]
    longer = Trainer(config.replace(steps=6), tokenizer=tiny_tokenizer()).train(data)  # max_steps may grow
    assert longer.steps == 6 and [r["step"] for r in longer.history] == [3, 4, 6]
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [3, 4, 6]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
