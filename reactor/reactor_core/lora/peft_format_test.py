"""PEFT export: Hugging Face `peft` loads our adapter onto the transformers base and agrees."""

import json
import os
import sys

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from reactor_core.formats import hf
from reactor_core.lora import lora, peft_format
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train.config import LoraConfig

CFG = LlamaConfig.preset("tiny")
LORA = LoraConfig(rank=4, alpha=8.0, targets="all-linear")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(base HF dir, adapted model, our logits, tokens)."""
    root = tmp_path_factory.mktemp("peft")
    base_dir = str(root / "base")
    model = Llama(CFG, rngs=nnx.Rngs(0))
    hf.save_hf_dir(model, base_dir)
    lora.apply_lora(model, LORA, rngs=nnx.Rngs(1))
    for i, (_, layer) in enumerate(lora.lora_layers(model)):
        layer.lora_b.set_value(0.05 * jax.random.normal(jax.random.key(10 + i), layer.lora_b.get_value().shape))
    tokens = np.asarray(jax.random.randint(jax.random.key(3), (2, 16), 0, CFG.vocab_size))
    logits = np.asarray(nnx.jit(lambda m, t: m(t))(model, tokens))
    return base_dir, model, logits, tokens


def _torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


def test_adapter_files(tuned, tmp_path):
    _, model, _, _ = tuned
    path = peft_format.save_adapter(model, LORA, str(tmp_path / "adapter"), base_model="base")
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]
    cfg = json.load(open(os.path.join(path, "adapter_config.json")))
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == ("LORA", 4, 8.0, False)
    assert sorted(cfg["target_modules"]) == sorted(LORA.targets)


def test_peft_loads_adapter_onto_transformers_base(tuned, tmp_path):
    import peft
    import transformers

    base_dir, model, logits, tokens = tuned
    path = peft_format.save_adapter(model, LORA, str(tmp_path / "adapter"), base_model=base_dir)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(base, path).eval()
    np.testing.assert_allclose(_torch_logits(peft_model, tokens), logits, atol=1e-5, rtol=1e-5)


def test_merged_export_is_a_plain_hf_model(tuned, tmp_path):
    import transformers

    _, model, logits, tokens = tuned
    path = peft_format.save_merged(model, str(tmp_path / "merged"))
    merged = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    np.testing.assert_allclose(_torch_logits(merged, tokens), logits, atol=1e-5, rtol=1e-5)
    assert list(lora.lora_layers(model)), "save_merged must leave the model unmerged"


def test_load_adapter_round_trip(tuned, tmp_path):
    _, model, logits, tokens = tuned
    path = peft_format.save_adapter(model, LORA, str(tmp_path / "adapter"))
    fresh = Llama(CFG, rngs=nnx.Rngs(0))
    lora.apply_lora(fresh, LORA, rngs=nnx.Rngs(99))
    peft_format.load_adapter(fresh, path)
    np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, t: m(t))(fresh, tokens)), logits)


def test_load_adapter_rank_mismatch(tuned, tmp_path):
    _, model, _, _ = tuned
    path = peft_format.save_adapter(model, LORA, str(tmp_path / "adapter"))
    other = Llama(CFG, rngs=nnx.Rngs(0))
    lora.apply_lora(other, LoraConfig(rank=2, targets="all-linear"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shape"):
        peft_format.load_adapter(other, path)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
