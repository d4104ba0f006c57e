import json
import os
import shutil
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jarvis_prime import ModelNotAvailableError
from jarvis_prime.testing import CHATML, make_tokenizer
from jarvis_prime.tokenizer import Tokenizer, load_tokenizer

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Café? 😀"},
    {"role": "assistant", "content": "Oui."},
    {"role": "user", "content": "Bye"},
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tok"))
    make_tokenizer(d)
    return d


def test_matches_transformers(tok_dir):
    from transformers import PreTrainedTokenizerFast

    ours = load_tokenizer(tok_dir)
    ref = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    assert isinstance(ours, Tokenizer)
    assert ours.apply_chat_template(MESSAGES) == ref.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    for text in ["Hello world", "Café 😀 東京", ours.apply_chat_template(MESSAGES)]:
        assert ours.encode(text) == ref.encode(text)
        assert ours.decode(ours.encode(text)) == ref.decode(ref.encode(text), skip_special_tokens=True)
    assert (ours.eos_token_id, ours.bos_token_id, len(ours)) == (ref.eos_token_id, ref.bos_token_id, len(ref))


def test_template_from_chat_template_jinja(tok_dir, tmp_path):
    for name in os.listdir(tok_dir):
        shutil.copy(os.path.join(tok_dir, name), tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(str(tmp_path)).chat_template is None
    (tmp_path / "chat_template.jinja").write_text(CHATML)
    assert load_tokenizer(str(tmp_path)).chat_template == CHATML


def test_add_bos_token(tok_dir, tmp_path):
    for name in os.listdir(tok_dir):
        shutil.copy(os.path.join(tok_dir, name), tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["add_bos_token"] = True
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(str(tmp_path))
    assert tok.encode("hi")[0] == tok.bos_token_id
    assert tok.encode("hi", add_special_tokens=False)[0] != tok.bos_token_id


def test_corrupt_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelNotAvailableError, match="tokenizer does not load"):
        load_tokenizer(str(tmp_path))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
