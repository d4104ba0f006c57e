"""A PEFT LoRA directory (as Reactor exports it) loads on top of its base."""

import json
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jarvis_prime import ModelNotAvailableError, PrimeModel, adapter
from jarvis_prime.store import Store
from jarvis_prime.testing import make_tiny_model

MAX = 12


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("base") / "tiny")


@pytest.fixture(scope="module")
def peft_dir(base, tmp_path_factory):
    """A real PEFT adapter with non-zero B, saved by the peft library."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = str(tmp_path_factory.mktemp("adapter") / "lora")
    peft_model.save_pretrained(out)
    return out


def peft_greedy(base, adapter_dir, prompt_ids):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter_dir)
    out = model.generate(
        input_ids=torch.tensor([prompt_ids]), max_new_tokens=MAX, do_sample=False, eos_token_id=2, pad_token_id=0
    )
    return tuple(out[0, len(prompt_ids) :].tolist())


@pytest.mark.parametrize("backend", ["jax", "mlx"])
def test_adapter_matches_peft(base, peft_dir, tmp_path, backend):
    store = Store(str(tmp_path / "home"))
    tuned = PrimeModel.from_pretrained(base, backend=backend, adapter=peft_dir, store=store)
    plain = PrimeModel.from_pretrained(base, backend=backend, store=store)
    prompt = "What is the capital of France?"
    ids = tuned.encode_prompt(prompt)
    got = tuned.generate(prompt, max_tokens=MAX).token_ids
    assert got == peft_greedy(base, peft_dir, ids)
    assert got != plain.generate(prompt, max_tokens=MAX).token_ids  # the adapter changed something
    merged = [d for d in os.listdir(os.path.join(store.root, "converted")) if d.startswith("merged-")]
    assert len(merged) == 1  # merged once, kept in the store


def test_merge_math(base, peft_dir, tmp_path):
    from reactor_core.formats import safetensors_io

    _, lora, scale = adapter.read_adapter(peft_dir)
    assert scale == 2.0 and len(lora) == 2 * 3  # 2 layers x (q, v, down)
    out = tmp_path / "merged"
    out.mkdir()
    adapter.merge_into(base, peft_dir, str(out))
    before = safetensors_io.load(os.path.join(base, "model.safetensors"))
    after = safetensors_io.load(str(out / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    a, b = lora[name]
    np.testing.assert_allclose(after[name], before[name] + scale * b @ a, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        after["model.layers.0.self_attn.k_proj.weight"], before["model.layers.0.self_attn.k_proj.weight"]
    )
    assert (out / "tokenizer.json").exists() and (out / "config.json").exists()


def write_adapter(path, tensors, **config):
    from reactor_core.formats import safetensors_io

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 2, **config}, f)
    safetensors_io.save(tensors, os.path.join(path, "adapter_model.safetensors"))


def test_bad_adapters(base, tmp_path):
    store = Store(str(tmp_path / "home"))
    with pytest.raises(ModelNotAvailableError, match="No adapter directory"):
        adapter.merged(base, str(tmp_path / "none"), store)
    p = "base_model.model.model.layers.0.self_attn.q_proj"
    wrong = str(tmp_path / "wrong")
    write_adapter(
        wrong, {f"{p}.lora_A.weight": np.ones((2, 32), np.float32), f"{p}.lora_B.weight": np.ones((64, 2), np.float32)}
    )
    with pytest.raises(ModelNotAvailableError, match="trained on another model"):
        adapter.merged(base, wrong, store)
    half = str(tmp_path / "half")
    write_adapter(half, {f"{p}.lora_A.weight": np.ones((2, 64), np.float32)})
    with pytest.raises(ModelNotAvailableError, match="lora_B is missing"):
        adapter.merged(base, half, store)
    other = str(tmp_path / "other")
    write_adapter(other, {f"{p}.lora_A.weight": np.ones((2, 64), np.float32)}, peft_type="PREFIX_TUNING")
    with pytest.raises(ModelNotAvailableError, match="PREFIX_TUNING"):
        adapter.merged(base, other, store)
    assert not os.path.exists(os.path.join(store.root, "converted")) or not os.listdir(
        os.path.join(store.root, "converted")
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
