"""Pace arithmetic (first step apart, pauses left out, ETA) and the preemption-notice advice."""

import sys

import pytest

from reactor_core.train import environment
from reactor_core.train.config import TrainingConfig
from reactor_core.train.pace import Pace, format_duration


def test_first_step_is_kept_apart_and_pauses_are_left_out():
    pace = Pace(total_steps=10, start_step=4)
    pace.start(now=100.0, tokens_seen=4000, paused_s=0.0)
    assert (pace.finished, pace.step_s, pace.eta_s, pace.figures()) == (4, None, None, {})
    assert pace.rate_so_far(now=130.0, tokens_seen=5000, paused_s=10.0) == 50.0  # 1000 tokens in 20 s
    pace.finish(5, now=160.0, tokens_seen=5000, paused_s=0.0)  # compile + one step
    assert pace.first_step_s == 60.0 and pace.measured == 0 and pace.eta_s is None
    pace.finish(6, now=162.0, tokens_seen=6000, paused_s=0.0)
    pace.finish(7, now=167.0, tokens_seen=7000, paused_s=3.0)  # a 3 s checkpoint save in between
    assert pace.step_s == 2.0 and pace.tokens_per_s == 500.0
    assert pace.eta_s == 6.0  # 3 steps left
    assert pace.figures() == {
        "train/first_step_s": 60.0,
        "train/step_s": 2.0,
        "train/tokens_per_sec": 500.0,
        "train/eta_s": 6.0,
    }


def test_rates_follow_the_recent_window():
    pace = Pace(total_steps=100, start_step=0, window=2)
    pace.start(0.0, 0)
    for step, now in enumerate([5.0, 6.0, 7.0, 11.0, 15.0], start=1):
        pace.finish(step, now, tokens_seen=step * 100, paused_s=0.0)
    assert pace.step_s == 4.0 and pace.measured == 2


def test_format_duration():
    assert [format_duration(s) for s in (None, 5, 65, 3725)] == ["?", "0:05", "1:05", "1:02:05"]


def test_notice_advice_names_the_step_and_the_fix():
    config = TrainingConfig(batch_size=8, seq_len=1024, steps_in_flight=2)
    assert environment.notice_advice(5.0, config, 30.0) is None
    assert environment.notice_advice(60.0, config, None) is None  # nothing preempts this machine
    advice = environment.notice_advice(60.0, config, 30.0)
    assert "60.0s" in advice and "--batch_size=" in advice and "--steps_in_flight=1" in advice
    assert "--steps_in_flight" not in environment.notice_advice(40.0, config.replace(steps_in_flight=1), 30.0)
    assert environment.notice_advice(20.0, config.replace(steps_in_flight=1), 30.0) is None


def test_notice_from_the_environment(monkeypatch):
    monkeypatch.setenv(environment.NOTICE_ENV, "12.5")
    assert environment.preemption_notice_s() == 12.5
    monkeypatch.setenv(environment.NOTICE_ENV, "soon")
    with pytest.raises(ValueError, match=environment.NOTICE_ENV):
        environment.preemption_notice_s()


def test_steps_in_flight_is_one_or_two():
    with pytest.raises(ValueError, match=r"run\.steps_in_flight must be 1 or 2, got 3"):
        TrainingConfig(steps_in_flight=3)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
