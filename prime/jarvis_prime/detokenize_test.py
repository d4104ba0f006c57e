import sys

import pytest

from jarvis_prime.detokenize import Detokenizer
from jarvis_prime.testing import make_tokenizer
from jarvis_prime.tokenizer import Tokenizer

TEXTS = [
    "Hello world, how are you?",
    "Café naïve über 東京 😀 ❤️ done",
    "😀😀😀 multi\nline\n\ttabs  double  spaces",
    "新しい 🤖 emoji sequences 👩‍💻 and ünïcödé",
]


def byte_level():
    import tempfile

    d = tempfile.mkdtemp()
    make_tokenizer(d)
    return Tokenizer.from_dir(d)


def llama2_style():
    """SentencePiece-like BPE with byte fallback (<0xNN> tokens), like Llama 2's tokenizer.json."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in "▁abcdefghijklmnopqrstuvwxyzHCW,?.!\n\t":
        vocab.setdefault(ch, len(vocab))
    vocab["▁w"] = len(vocab)
    backend = Backend(models.BPE(vocab=vocab, merges=[("▁", "w")], byte_fallback=True, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return Tokenizer(backend, bos_token="<s>", eos_token="</s>", add_bos=False, chat_template=None)


@pytest.mark.parametrize("make", [byte_level, llama2_style])
@pytest.mark.parametrize("text", TEXTS)
def test_pieces_are_whole_characters_and_add_up(make, text):
    tok = make()
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # characters really are split over tokens
    detok = Detokenizer(tok)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in p for p in pieces), pieces
    assert "".join(pieces) == tok.decode(ids)
    assert "".join(pieces).strip() == text.strip()


def test_a_split_character_waits_for_its_last_byte():
    tok = byte_level()
    ids = tok.encode("😀", add_special_tokens=False)
    assert len(ids) > 1
    detok = Detokenizer(tok)
    assert [detok.add(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.add(ids[-1]) == "😀"


def test_unfinished_character_at_the_end_is_flushed_as_replacement():
    tok = byte_level()
    ids = tok.encode("😀", add_special_tokens=False)
    detok = Detokenizer(tok)
    for i in ids[:-1]:
        detok.add(i)
    assert detok.flush() == tok.decode(ids[:-1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
