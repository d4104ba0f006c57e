"""The benches' parsing, timing and judging helpers, without a model.

Run: bazel test //jarvis:bench_test
"""

import argparse
import sys

import pytest

from jarvis import bench, bench_conversation
from jarvis.bench_conversation import RunResult, TurnTiming, goals, parse_stats, split_turn

STATS = "[64 tokens · 31.5 tok/s · first token 0.21 s · prompt 57 tokens · length]"


def test_parse_stats():
    s = parse_stats("  " + STATS + "\r")
    assert (s.tokens, s.rate, s.prompt_tokens) == (64, 31.5, 57)


@pytest.mark.parametrize("line", ["", "Hello [world]", "[64 tokens]", "[1 token · 2.0 tok/s", "you> "])
def test_parse_stats_rejects_other_lines(line):
    assert parse_stats(line) is None


def test_split_turn_finds_the_answer_between_marker_and_stats():
    segment = "jarvis> Boil it\r\nfor 18 minutes.\r\n" + STATS + "\r\n"
    start, end, stats = split_turn(segment)
    assert segment[start:end] == "Boil it\r\nfor 18 minutes."
    assert stats.tokens == 64


def test_split_turn_without_stats_or_answer():
    assert split_turn("no marker here") is None
    start, end, stats = split_turn("jarvis> Hi [there]\r\n")
    assert ("jarvis> Hi [there]\r\n"[start:end], stats) == ("Hi [there]", None)
    start, end, _ = split_turn("jarvis> \r\n" + STATS + "\r\n")
    assert end == start


def test_terminal_times_each_byte():
    term = bench_conversation.Terminal.__new__(bench_conversation.Terminal)
    term.text, term._ends, term._times = "abcdef", [2, 6], [1.0, 2.5]
    assert [term.time_at(i) for i in (0, 1, 2, 5)] == [1.0, 1.0, 2.5, 2.5]


def _run(ttfts, rates, wall):
    turns = tuple(TurnTiming(t, 11, 10 / r) for t, r in zip(ttfts, rates))
    return RunResult("cold", 3.0, turns, wall)


def test_decode_rate_pools_all_turns():
    run = RunResult("x", None, (TurnTiming(0.1, 11, 1.0), TurnTiming(0.1, 21, 1.0), TurnTiming(None)), 5.0)
    assert run.decode_rate == pytest.approx(15.0)
    assert TurnTiming(0.1, 1, 0.0).decode_rate == 0.0


def test_stalled_turns():
    assert bench_conversation.stalled(_run([0.1] * 4, [40.0, 8.0, 45.0, 50.0], 1.0)) == "2"
    assert bench_conversation.stalled(_run([0.1] * 2, [40.0, 30.0], 1.0)) == "none"


def test_goals_met_and_missed():
    peer = _run([0.1, 0.1], [40.0, 40.0], 10.0)
    met = goals(_run([0.2, 0.15], [40.0, 50.0], 9.0), peer)
    assert [line.split(": ")[1].split()[0] for line in met] == ["met", "met", "met"]
    missed = goals(_run([0.1, 0.25], [30.0, 30.0], 11.0), peer)
    assert [line.split(": ")[1].split()[0] for line in missed] == ["missed", "missed", "missed"]
    assert "worst turn 2" in missed[0]


def test_goals_without_an_answer_or_a_peer():
    peer = _run([0.1], [40.0], 10.0)
    no_answer = RunResult("cold", 3.0, (TurnTiming(None),), 1.0)
    assert "missed" in goals(no_answer, peer)[0]
    assert all("n/a" in line for line in goals(peer, None))


def test_format_table():
    ours, peer = _run([0.5, 0.25], [20.0, 25.0], 7.5), _run([0.1, 0.1], [40.0, 40.0], 5.0)
    text = bench_conversation.format_table(ours, peer)
    lines = text.splitlines()
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["1", "n/a", "0.50", "0.10", "20.0", "40.0"]
    assert len({len(line) for line in lines[1:5]}) == 1  # the columns line up
    assert "ours 7.50 s, llama.cpp 5.00 s" in text and "load to ready: ours 3.00 s, llama.cpp 3.00 s" in text
    assert "n/a" in bench_conversation.format_table(RunResult("warm", None, (), 1.0), None)


def test_scaling_goal():
    assert "4.00x (goal >= 4x: met)" in bench.scaling_goal({1: 10.0, 4: 30.0, 8: 40.0})
    assert "missed" in bench.scaling_goal({1: 10.0, 8: 39.0})
    assert "n/a" in bench.scaling_goal({1: 10.0, 4: 30.0})


def test_client_counts():
    assert bench._client_counts("1,4, 8,16") == (1, 4, 8, 16)
    with pytest.raises(argparse.ArgumentTypeError, match="counts like"):
        bench._client_counts("1,four")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
