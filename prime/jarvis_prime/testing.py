"""Test fixtures: a tiny random Llama as a complete Hugging Face directory, in well under a second.

    from jarvis_prime.testing import make_tiny_model
    path = make_tiny_model(tmp_path / "tiny")          # config, safetensors, tokenizer, template
    model = PrimeModel.from_pretrained(str(path))

The tokenizer is a byte-level BPE trained on a built-in paragraph (so multi-byte
characters split over several tokens, as in real models), with ChatML special tokens and
SmolLM2's ids: <|endoftext|> 0, <|im_start|> 1 (BOS), <|im_end|> 2 (EOS). Weights are
seeded normals scaled so greedy decoding has clear margins (same tokens on every backend).
"""

from __future__ import annotations

import json
import os

import numpy as np

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Machine learning is the study of programs that "
    "improve with experience. What is the capital of France? Paris is the capital of France. "
    "Hello, how are you today? I am fine, thank you. Café, naïve, über, 東京, 😀 and ❤️ are text too. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024."
)


def make_tokenizer(path: str, vocab_size: int = 384) -> None:
    """Writes tokenizer.json + tokenizer_config.json (ChatML template) into `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[1],
        "eos_token": SPECIAL_TOKENS[2],
        "unk_token": SPECIAL_TOKENS[0],
        "pad_token": SPECIAL_TOKENS[0],
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "chat_template": CHATML,
    }
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def make_tiny_model(
    path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 384,
    tie_word_embeddings: bool = False,
    dtype: str = "float32",
) -> str:
    """Writes a random Llama HF directory at `path` (created if needed) and returns it as str."""
    import ml_dtypes
    from reactor_core.formats import safetensors_io

    path = os.fspath(path)
    make_tokenizer(path, vocab_size)
    with open(os.path.join(path, "tokenizer.json")) as f:
        vocab = max(json.load(f)["model"]["vocab"].values()) + 1
    vocab = max(vocab, len(SPECIAL_TOKENS))
    head_dim = hidden_size // num_heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": tie_word_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": dtype,
    }
    rng = np.random.default_rng(seed)

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    h, m, d = hidden_size, intermediate_size, head_dim
    tensors = {"model.embed_tokens.weight": normal((vocab, h), 1.0), "model.norm.weight": np.ones(h, np.float32)}
    for i in range(num_layers):
        p = f"model.layers.{i}."
        tensors.update(
            {
                p + "input_layernorm.weight": 1 + normal((h,), 0.1),
                p + "post_attention_layernorm.weight": 1 + normal((h,), 0.1),
                p + "self_attn.q_proj.weight": normal((num_heads * d, h), 0.5 / np.sqrt(h)),
                p + "self_attn.k_proj.weight": normal((num_kv_heads * d, h), 0.5 / np.sqrt(h)),
                p + "self_attn.v_proj.weight": normal((num_kv_heads * d, h), 1 / np.sqrt(h)),
                p + "self_attn.o_proj.weight": normal((h, num_heads * d), 1 / np.sqrt(h)),
                p + "mlp.gate_proj.weight": normal((m, h), 1 / np.sqrt(h)),
                p + "mlp.up_proj.weight": normal((m, h), 1 / np.sqrt(h)),
                p + "mlp.down_proj.weight": normal((h, m), 1 / np.sqrt(m)),
            }
        )
    if not tie_word_embeddings:
        tensors["lm_head.weight"] = normal((vocab, h), 3 / np.sqrt(h))
    if dtype == "bfloat16":
        tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    safetensors_io.save(tensors, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)
    return path
