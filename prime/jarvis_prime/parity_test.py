"""Tiny random models give the same greedy tokens through JAX, MLX and transformers."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jarvis_prime import PrimeModel
from jarvis_prime.store import Store
from jarvis_prime.testing import make_tiny_model

PROMPTS = ["The quick brown fox", "What is the capital of France?", "Café 😀 東京 42"]
MAX = 16
CONFIGS = {
    "gqa": {"seed": 0},
    "tied-mha": {"seed": 1, "num_kv_heads": 4, "tie_word_embeddings": True},
    "deeper": {
        "seed": 2,
        "num_layers": 3,
        "hidden_size": 128,
        "num_heads": 8,
        "num_kv_heads": 2,
        "intermediate_size": 256,
    },
}


def transformers_greedy(path, prompt_ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = model.generate(
        torch.tensor([prompt_ids]), max_new_tokens=MAX, do_sample=False, eos_token_id=2, pad_token_id=0
    )
    return tuple(out[0, len(prompt_ids) :].tolist())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_greedy_tokens_everywhere(name, tmp_path):
    path = make_tiny_model(tmp_path / name, **CONFIGS[name])
    store = Store(str(tmp_path / "home"))
    jax_model = PrimeModel.from_pretrained(path, backend="jax", store=store)
    mlx_model = PrimeModel.from_pretrained(path, backend="mlx", store=store)
    for prompt in PROMPTS:
        ids = jax_model.encode_prompt(prompt)
        ours = jax_model.generate(prompt, max_tokens=MAX).token_ids
        assert len(ours) >= 4
        assert mlx_model.generate(prompt, max_tokens=MAX).token_ids == ours, prompt
        assert transformers_greedy(path, ids) == ours, prompt


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
