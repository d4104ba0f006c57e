"""Exact resume: a run killed again and again (SIGTERM and SIGKILL, also mid-save) and restarted
ends bitwise identical to an uninterrupted one: every logged loss and every final parameter.

Kill plan (7 kill points; the step offsets are drawn from a seeded RNG):
  TERM at a step     -> finishes the step, saves synchronously, exits 143
  KILL at a step     -> loses the steps since the last checkpoint; they are recomputed
  KILL on save start -> dies while an asynchronous save is being written
  TERM, then KILL    -> dies during the synchronous preemption save
"""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from reactor_core.dist.preemption import EXIT_PREEMPTED

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resume_train.py")
STEPS, SAVE_EVERY, BALLAST_MB = 14, 3, 64
# TERMs (which save) alternate with kills (which lose work), so the run keeps moving forward.
PLAN = ["TERM", "KILL_ON_SAVE", "TERM", "KILL", "TERM_THEN_KILL", "TERM", "KILL_ON_SAVE"]


def _cmd(tmp_path, name):
    return [
        sys.executable, SCRIPT, f"--ckpt_dir={tmp_path / name / 'ckpt'}", f"--log={tmp_path / name / 'losses.txt'}",
        f"--out={tmp_path / name / 'final.npz'}", f"--steps={STEPS}", f"--save_every={SAVE_EVERY}",
        f"--ballast_mb={BALLAST_MB}",
    ]  # fmt: skip


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _run_with_kill(cmd, plan: str, offset: int):
    """Starts the run and applies one kill; returns (exit code, what happened)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    resumed, event = None, "ran to the end"
    try:
        for line in proc.stdout:
            word, _, arg = line.strip().partition(" ")
            if word == "resumed":
                resumed = int(arg)
            elif word == "step" and plan in ("TERM", "KILL", "TERM_THEN_KILL") and int(arg) >= resumed + offset:
                if plan == "KILL":
                    proc.send_signal(signal.SIGKILL)
                    event = f"SIGKILL after step {arg}"
                else:
                    proc.send_signal(signal.SIGTERM)
                    event = f"SIGTERM after step {arg}"
                    if plan == "TERM_THEN_KILL":
                        # The preemption save of BALLAST_MB starts right away; kill it half way.
                        time.sleep(0.05)
                        proc.send_signal(signal.SIGKILL)
                        event += ", SIGKILL during its save"
                break
            elif word == "save-started" and plan == "KILL_ON_SAVE":
                proc.send_signal(signal.SIGKILL)
                event = f"SIGKILL during the async save of step {arg}"
                break
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, resumed, event


def _losses(path):
    by_step = {}
    for line in path.read_text().splitlines():
        step, value = line.split()
        by_step.setdefault(int(step), []).append(value)
    return by_step


def _params(path):
    f = np.load(path)
    return [f[k] for k in sorted(f.files, key=lambda n: int(n.split("_")[1]))]


def test_killed_and_resumed_run_is_bitwise_identical(tmp_path):
    for name in ("reference", "killed"):
        (tmp_path / name).mkdir()
    subprocess.run(_cmd(tmp_path, "reference"), env=_env(), check=True, capture_output=True, timeout=600)

    rng = random.Random(1234)
    history = []
    mid_save_hits = 0
    for plan in PLAN:
        code, resumed, event = _run_with_kill(_cmd(tmp_path, "killed"), plan, offset=rng.randint(1, 3))
        leftovers = [n for n in os.listdir(tmp_path / "killed" / "ckpt") if "tmp" in n]
        mid_save_hits += bool(leftovers)
        history.append(f"resumed at {resumed}: {event} -> exit {code}, partial dirs {len(leftovers)}")
        if plan == "TERM":
            assert code == EXIT_PREEMPTED, history
        else:
            assert code == -signal.SIGKILL, history
    code, resumed, _ = _run_with_kill(_cmd(tmp_path, "killed"), "NONE", 0)
    history.append(f"resumed at {resumed}: ran to the end -> exit {code}")
    print("\n".join(history))
    assert code == 0, history
    assert mid_save_hits >= 2, history  # the kills really landed inside saves

    ref, got = _losses(tmp_path / "reference" / "losses.txt"), _losses(tmp_path / "killed" / "losses.txt")
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    for step, values in got.items():
        assert set(values) == set(ref[step]), (step, values, ref[step])  # re-run steps too: bitwise
    assert sum(len(v) for v in got.values()) > STEPS  # some steps really were recomputed
    ref_params, got_params = _params(tmp_path / "reference" / "final.npz"), _params(tmp_path / "killed" / "final.npz")
    for a, b in zip(ref_params, got_params, strict=True):
        np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
