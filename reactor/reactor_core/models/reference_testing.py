"""Test helpers: tiny random transformers LlamaForCausalLM twins of reactor configs (tests only)."""

from __future__ import annotations

import numpy as np

from reactor_core.models.config import LlamaConfig, to_hf_config


def hf_model(config: LlamaConfig, seed: int = 0):
    """A random-weight transformers LlamaForCausalLM (float32, eval mode) with `config`'s shapes."""
    import torch
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    hf = {k: v for k, v in to_hf_config(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
    model = LlamaForCausalLM(HFLlamaConfig(**hf)).eval()
    with torch.no_grad():  # HF inits norms to 1; randomize so a norm/weight mix-up would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def random_tokens(vocab: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(3, vocab, size=shape).astype(np.int32)


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the logit scale max |b|."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))
