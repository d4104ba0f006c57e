"""QLoRA memory from jax.eval_shape: llama-2-7b in NF4 fits in ~4 GB, bfloat16 needs ~13.5 GB."""

import sys

import pytest

from reactor_core.lora import memory, quant
from reactor_core.models.config import LlamaConfig
from reactor_core.train.config import LoraConfig, QuantConfig


def test_tiny_counts_are_exact():
    cfg = LlamaConfig.preset("tiny")
    lora = LoraConfig(rank=4, targets="q,v")
    m = memory.training_memory(cfg, lora, QuantConfig(), dtype="float32")
    per_layer = 4 * (64 + 64) + 4 * (64 + 32)  # q: 64->64, v: 64->32 (2 kv heads x 16)
    assert m["adapter"] == cfg.num_layers * per_layer * 4
    assert m["optimizer"] == 2 * m["adapter"] + 4  # AdamW mu, nu and an int32 count
    assert m["base"] == 106_816 * 4


def test_llama_2_7b_nf4_vs_bfloat16():
    cfg = LlamaConfig.preset("llama-2-7b")
    lora = LoraConfig(rank=16)
    bf16 = memory.training_memory(cfg, lora, QuantConfig(mode="none"))
    nf4 = memory.training_memory(cfg, lora, QuantConfig(mode="nf4"))
    print()
    print(memory.format_table({"llama-2-7b bf16 + LoRA": bf16, "llama-2-7b NF4 + LoRA": nf4}))
    assert bf16["base"] == 6_738_415_616 * 2
    assert 13.4e9 < bf16["total"] < 13.8e9
    assert 3.8e9 < nf4["total"] < 4.2e9
    # Quantised linears cost bits_per_weight; embeddings, head and norms stay bfloat16.
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    expected = linear * quant.bits_per_weight("nf4") / 8 + (6_738_415_616 - linear) * 2
    assert nf4["base"] == pytest.approx(expected, rel=1e-4)
    assert nf4["adapter"] == bf16["adapter"] == 32 * 4 * 16 * (4096 + 4096) * 4


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
