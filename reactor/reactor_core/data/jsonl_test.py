"""Tests for JSONL reading, format detection and validation."""

import json
import sys

import pytest

from reactor_core.data import jsonl, schema
from reactor_core.data import stats as stats_lib

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
}
TEXT = {"text": "Once upon a time."}
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
PREF = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_bytes(
        b"".join((ln if isinstance(ln, bytes) else json.dumps(ln).encode()) + b"\n" for ln in lines)
    )
    return str(path)


def test_reads_each_format(tmp_path):
    path = write(tmp_path, [TEXT, CHAT, ALPACA, dict(ALPACA, input="")])
    stats = stats_lib.DataStats()
    records = jsonl.read_jsonl(path, stats=stats)
    assert [r.format for r in records] == ["text", "messages", "alpaca", "alpaca"]
    assert [r.line for r in records] == [1, 2, 3, 4]
    assert records[0].example == schema.TextExample("Once upon a time.")
    assert records[1].example.messages[0] == schema.Message("system", "Be brief.")
    assert records[2].example.messages == (
        schema.Message("user", "Add the numbers.\n\n2 and 3"),
        schema.Message("assistant", "5"),
    )
    assert records[3].example.messages[0].content == "Add the numbers."
    assert dict(stats.formats) == {"text": 1, "messages": 1, "alpaca": 2}


def test_preference_variants(tmp_path):
    conv_prompt = {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": "bad",
    }
    records = jsonl.read_jsonl(write(tmp_path, [PREF, conv_prompt]))
    assert records[0].example == schema.PreferenceExample(
        (schema.Message("user", "Capital of France?"),), "Paris.", "Rome."
    )
    assert records[1].example.prompt[0].role == "system"
    assert (records[1].example.chosen, records[1].example.rejected) == ("good", "bad")
    assert schema.to_json(records[0]) == {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": "Paris.",
        "rejected": "Rome.",
    }


def test_normalised_json_round_trips(tmp_path):
    records = jsonl.read_jsonl(write(tmp_path, [TEXT, CHAT, ALPACA]))
    again = jsonl.read_jsonl(write(tmp_path, [schema.to_json(r) for r in records], "norm.jsonl"))
    assert [r.example for r in again] == [r.example for r in records]
    assert [r.format for r in again] == ["text", "messages", "messages"]


BAD = [
    (b'{"text": "unterminated', "invalid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"foo": 1}', "unknown format"),
    (b'{"text": "a", "messages": []}', "ambiguous format"),
    (b'{"text": "   "}', "'text' is empty"),
    (b'{"text": 5}', "'text' must be a string"),
    (b'{"messages": []}', "empty list"),
    (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}',
        "content is empty",
    ),
    (b'{"messages": [{"role": "bot", "content": "hi"}]}', "role must be one of"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    (
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, '
        b'{"role": "assistant", "content": "c"}]}',
        "system message may only come first",
    ),
    (b'{"instruction": "do", "output": ""}', "'output' is empty"),
    (b'{"text": "caf\xe9"}', "not valid UTF-8"),
]


@pytest.mark.parametrize("line,reason", BAD, ids=[r for _, r in BAD])
def test_bad_line_names_file_line_and_reason(tmp_path, line, reason):
    path = write(tmp_path, [TEXT, line])
    with pytest.raises(schema.DataError) as info:
        jsonl.read_jsonl(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.path, err.line) == (path, 2)
    assert reason in str(err) and f"{path}:2:" in str(err)


@pytest.mark.parametrize(
    "pref,reason",
    [
        (dict(PREF, rejected="Paris."), "identical"),
        ({"prompt": "q", "chosen": "a"}, "missing key 'rejected'"),
        (
            dict(
                PREF,
                prompt=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            ),
            "end with a user",
        ),
        (dict(PREF, chosen=[{"role": "user", "content": "x"}]), "one assistant message"),
    ],
)
def test_bad_preference(tmp_path, pref, reason):
    with pytest.raises(schema.DataError, match=reason):
        jsonl.read_jsonl(write(tmp_path, [pref]))


def test_skip_bad_lines_counts_and_reports(tmp_path):
    path = write(tmp_path, [TEXT, b"{oops", CHAT, b"", b'{"text": ""}', b"\xff\xfe", ALPACA])
    stats = stats_lib.DataStats()
    records = jsonl.read_jsonl(path, skip_bad_lines=True, stats=stats)
    assert [r.line for r in records] == [1, 3, 7]
    assert (stats.lines, stats.blank_lines, stats.bad_lines) == (6, 1, 3)
    assert [(b.line, b.path) for b in stats.bad_line_samples] == [(2, path), (5, path), (6, path)]
    report = stats.report()
    assert f"{path}:2: invalid JSON" in report and "not valid UTF-8" in report
    assert stats.to_dict()["bad_lines"] == 3


def test_mixing_sft_and_preference_is_an_error_even_when_skipping(tmp_path):
    path = write(tmp_path, [TEXT, CHAT, PREF])
    with pytest.raises(schema.DataError, match="mixes SFT and preference") as info:
        jsonl.read_jsonl(path, skip_bad_lines=True)
    assert info.value.line == 3


def test_bom_crlf_and_extra_keys(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a", "id": 7}\r\n{"text": "b"}\r\n')
    records = jsonl.read_jsonl(str(path))
    assert [r.example.text for r in records] == ["a", "b"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
