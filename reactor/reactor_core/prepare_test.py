"""Tests for the prepare CLI and its library function."""

import json
import os
import subprocess
import sys

import pytest

from reactor_core import prepare
from reactor_core.data import dataset, jsonl, schema


@pytest.fixture(scope="module")
def chatterbot_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chatterbot")
    report = prepare.prepare(
        prepare.PrepareConfig(source="chatterbot", output=str(out), eval_fraction=0.1)
    )
    return out, report


def test_chatterbot_writes_valid_messages_and_preferences(chatterbot_dir):
    out, report = chatterbot_dir
    train = jsonl.read_jsonl(out / "train.jsonl")
    ev = jsonl.read_jsonl(out / "eval.jsonl")
    assert {r.format for r in train + ev} == {"messages"}
    total = len(train) + len(ev)
    assert total > 500 and 0.05 < len(ev) / total < 0.15
    assert report.files[str(out / "train.jsonl")] == len(train)
    assert any("trivia.yml" in n for n in report.notes)  # the corpus's one malformed entry
    for r in train[:50]:
        roles = [m.role for m in r.example.messages]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:]))
    conversations = {json.dumps(schema.to_json(r)) for r in train}
    assert len(conversations) == len(train)  # duplicates kept once
    assert not conversations & {json.dumps(schema.to_json(r)) for r in ev}

    p_train = jsonl.read_jsonl(out / "preference_train.jsonl")
    p_ev = jsonl.read_jsonl(out / "preference_eval.jsonl")
    assert len(p_train) == len(train) and len(p_ev) == len(ev)
    # A pair sits in the split of its conversation, and chosen is the corpus answer.
    for pair, conv in zip(p_ev, ev):
        assert (
            pair.example.prompt + (schema.Message("assistant", pair.example.chosen),)
            == conv.example.messages
        )
        assert pair.example.rejected != pair.example.chosen


def test_chatterbot_is_deterministic_and_refuses_to_overwrite(chatterbot_dir, tmp_path):
    out, _ = chatterbot_dir
    prepare.prepare(
        prepare.PrepareConfig(source="chatterbot", output=str(tmp_path), eval_fraction=0.1)
    )
    for name in prepare.SFT_FILES + prepare.PREFERENCE_FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare.prepare(prepare.PrepareConfig(source="chatterbot", output=str(tmp_path)))
    prepare.prepare(
        prepare.PrepareConfig(source="chatterbot", output=str(tmp_path), overwrite=True)
    )


def test_user_jsonl_is_validated_and_normalised(tmp_path):
    src = tmp_path / "mine.jsonl"
    lines = [
        json.dumps({"instruction": f"Do {i}", "input": "", "output": f"Done {i}"})
        for i in range(40)
    ]
    lines.insert(3, "{not json")
    lines.insert(7, json.dumps({"text": ""}))
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(schema.DataError, match=r"mine.jsonl:4: invalid JSON"):
        prepare.prepare(prepare.PrepareConfig(source=str(src)))
    report = prepare.prepare(prepare.PrepareConfig(source=str(src), skip_bad_lines=True))
    assert report.kind == "sft" and report.stats.bad_lines == 2 and report.files == {}
    out = tmp_path / "out"
    report = prepare.prepare(
        prepare.PrepareConfig(
            source=str(src), output=str(out), skip_bad_lines=True, eval_fraction=0.25
        )
    )
    records = jsonl.read_jsonl(out / "train.jsonl") + jsonl.read_jsonl(out / "eval.jsonl")
    assert len(records) == 40 and {r.format for r in records} == {"messages"}
    assert "alpaca=40" in report.summary() and "bad line" in report.summary()
    # The eval split is the one DataConfig(eval_fraction=...) would pick.
    for r in jsonl.read_jsonl(out / "eval.jsonl"):
        assert dataset.holdout_score(schema.to_json(r)) < 0.25


def test_preference_jsonl_goes_to_preference_files(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n"
            for i in range(5)
        )
    )
    report = prepare.prepare(
        prepare.PrepareConfig(source=str(src), output=str(tmp_path / "o"), eval_fraction=0)
    )
    assert report.kind == "preference"
    assert list(report.files) == [str(tmp_path / "o" / "preference_train.jsonl")]


def test_config_validation():
    with pytest.raises(ValueError, match="PrepareConfig.eval_fraction"):
        prepare.PrepareConfig(source="x.jsonl", eval_fraction=1.5)
    with pytest.raises(ValueError, match="PrepareConfig.output"):
        prepare.PrepareConfig(source="chatterbot")


def test_cli_resolves_paths_against_build_working_directory(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    env = dict(
        os.environ, BUILD_WORKING_DIRECTORY=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path)
    )
    script = os.path.join(os.path.dirname(prepare.__file__), "prepare.py")
    run = subprocess.run(
        [sys.executable, script, "--source=in.jsonl", "--output=rel_out", "--eval_fraction=0"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "text=1" in run.stdout
    assert (tmp_path / "rel_out" / "train.jsonl").read_text() == '{"text": "hello"}\n'
    again = subprocess.run(
        [sys.executable, script, "--source=in.jsonl", "--output=rel_out"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1 and "it exists" in again.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
