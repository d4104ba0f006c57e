"""Tests for DataConfig and building tokenized datasets from JSONL (split, overlong)."""

import json
import sys

import numpy as np
import pytest

from reactor_core.data import config as config_lib
from reactor_core.data import dataset, iterator, schema, testing_tokenizers


def chat_line(i, answer_words=3):
    return {
        "messages": [
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": " ".join(["word"] * answer_words) + f" {i}."},
        ]
    }


def write(tmp_path, objs, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


@pytest.fixture(scope="module")
def tiny():
    return testing_tokenizers.tiny_tokenizer()


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("seq_len", 1, "seq_len"),
        ("seq_len", True, "seq_len must be int"),
        ("batch_size", 0, "batch_size"),
        ("loss_on", "user", "loss_on must be one of ('assistant', 'all')"),
        ("overlong", "wrap", "overlong must be one of ('truncate', 'drop')"),
        ("eval_fraction", 1.0, "eval_fraction"),
        ("pack", 1, "pack must be bool"),
        ("seed", -1, "seed"),
        ("pack_window", 0, "pack_window"),
    ],
)
def test_config_validation_names_the_field(field, value, needle):
    with pytest.raises(
        ValueError, match=f"DataConfig.{needle}".replace("(", r"\(").replace(")", r"\)")
    ):
        config_lib.DataConfig(**{field: value})


def test_config_eval_path_and_fraction_are_exclusive():
    with pytest.raises(ValueError, match="eval_fraction must be 0"):
        config_lib.DataConfig(path="a", eval_path="b", eval_fraction=0.1)
    config_lib.DataConfig(path="a", eval_fraction=0.1)  # fine


def test_holdout_split_is_disjoint_stable_and_complete(tmp_path, tiny):
    path = write(tmp_path, [chat_line(i) for i in range(200)])
    cfg = config_lib.DataConfig(path=path, seq_len=128, eval_fraction=0.2)
    train = dataset.build_sft_dataset(cfg, tiny, split="train")
    ev = dataset.build_sft_dataset(cfg, tiny, split="eval")
    assert len(train) + len(ev) == 200 and 20 < len(ev) < 60
    assert train.stats.held_out == len(ev) and ev.stats.held_out == len(train)
    key = lambda d: {bytes(x) for x in d.input_ids}  # noqa: E731
    assert not key(train) & key(ev)
    assert key(dataset.build_sft_dataset(cfg, tiny, split="eval")) == key(ev)


def test_overlong_truncate_or_drop_is_counted(tmp_path, tiny):
    objs = [chat_line(0, 1), chat_line(1, 60), {"text": "x" * 100}]
    path = write(tmp_path, objs)
    cut = dataset.build_sft_dataset(config_lib.DataConfig(path=path, seq_len=64), tiny)
    assert len(cut) == 3 and cut.stats.truncated == 2
    assert max(len(x) for x in cut.input_ids) == 64
    dropped = dataset.build_sft_dataset(
        config_lib.DataConfig(path=path, seq_len=64, overlong="drop"), tiny
    )
    assert len(dropped) == 1 and dropped.stats.dropped_overlong == 2
    # A response entirely past seq_len leaves nothing to train: dropped and counted.
    long_prompt = {
        "messages": [{"role": "user", "content": "q" * 80}, {"role": "assistant", "content": "a"}]
    }
    path = write(tmp_path, [long_prompt, chat_line(0, 1)], "p.jsonl")
    data = dataset.build_sft_dataset(config_lib.DataConfig(path=path, seq_len=64), tiny)
    assert len(data) == 1 and data.stats.dropped_no_targets == 1 and data.stats.truncated == 1


def test_kind_mismatch_and_empty_result(tmp_path, tiny):
    pref = write(tmp_path, [{"prompt": "q", "chosen": "a", "rejected": "b"}], "pref.jsonl")
    with pytest.raises(schema.DataError, match="preference pairs"):
        dataset.build_sft_dataset(config_lib.DataConfig(path=pref), tiny)
    sft = write(tmp_path, [chat_line(0, 50)])
    with pytest.raises(schema.DataError, match="holds 'messages' SFT data"):
        dataset.build_preference_dataset(config_lib.DataConfig(path=sft), tiny)
    with pytest.raises(schema.DataError, match="no train examples left"):
        dataset.build_sft_dataset(
            config_lib.DataConfig(path=sft, seq_len=16, overlong="drop"), tiny
        )
    with pytest.raises(ValueError, match="DataConfig.path is empty"):
        dataset.build_sft_dataset(config_lib.DataConfig(), tiny)


def test_tokenization_errors_are_bad_lines(tmp_path, tiny):
    import copy

    tok = copy.deepcopy(tiny)
    tok.chat_template = (
        "{% for m in messages %}"
        "{% if m['content'] == 'boom' %}{{ raise_exception('no boom') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    bad = {"messages": [{"role": "user", "content": "boom"}, {"role": "assistant", "content": "x"}]}
    path = write(tmp_path, [chat_line(0), bad, chat_line(1)])
    with pytest.raises(schema.DataError, match=r"d.jsonl:2: .*no boom"):
        dataset.build_sft_dataset(config_lib.DataConfig(path=path, seq_len=128), tok)
    data = dataset.build_sft_dataset(
        config_lib.DataConfig(path=path, seq_len=128, skip_bad_lines=True), tok
    )
    assert len(data) == 2 and data.stats.bad_lines == 1 and data.stats.bad_line_samples[0].line == 2


def test_sft_batches_end_to_end_with_smollm2(tmp_path):
    tok = testing_tokenizers.smollm2_tokenizer()
    objs = [chat_line(i) for i in range(30)] + [{"text": f"Document {i}."} for i in range(5)]
    objs.append({"instruction": "Say hi.", "output": "Hi!"})
    path = write(tmp_path, objs)
    cfg = config_lib.DataConfig(path=path, seq_len=128, batch_size=2, eval_fraction=0.2)
    train = iterator.sft_batches(cfg, tok)
    batch = next(train)
    assert batch["tokens"].shape == (2, 128)
    assert train.stats.examples + train.stats.held_out == 36
    # Every weighted target of a chat example is an assistant token: never the prompt.
    eval_batches = list(iterator.sft_batches(cfg, tok, split="eval"))
    trained = sum(float(b["weights"].sum()) for b in eval_batches)
    assert trained == iterator.sft_batches(cfg, tok, split="eval").stats.target_tokens
    for b in eval_batches:
        text = tok.decode(b["targets"][b["weights"] > 0])
        assert "Question" not in text and "system" not in text


def test_preference_batches_end_to_end(tmp_path, tiny):
    objs = [
        {"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad answer {i}"} for i in range(9)
    ]
    cfg = config_lib.DataConfig(path=write(tmp_path, objs), seq_len=96, batch_size=4)
    it = iterator.preference_batches(cfg, tiny)
    batch = next(it)
    for side, word in (("chosen", "good"), ("rejected", "bad answer")):
        rows = batch[side]
        for r in range(4):
            assert tiny.decode(rows["targets"][r][rows["weights"][r] > 0]).startswith(word)
    assert it.stats.examples == 9
    np.testing.assert_array_equal(batch["valid"], np.ones(4))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
