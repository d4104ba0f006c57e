"""Small synthetic JSONL files for trainer tests (learnable in a few steps by a tiny model)."""

import json
import os
import random

_WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]


def write_chat(path: str, n: int = 160, *, seed: int = 0, bad_line: int | None = None) -> str:
    """Conversations "say W" -> "W W." (echo twice); line `bad_line` (1-based) is not JSON."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(1, n + 1):
            if i == bad_line:
                f.write("{not json\n")
                continue
            w = rng.choice(_WORDS)
            messages = [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} {w}."}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def write_preferences(path: str, n: int = 160, *, seed: int = 0) -> str:
    """Pairs: chosen echoes the word, rejected is another word."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            w, other = rng.sample(_WORDS, 2)
            f.write(json.dumps({"prompt": f"say {w}", "chosen": f"{w} {w}.", "rejected": f"{other}!"}) + "\n")
    return path


def tiny_config_kwargs(tmp_dir: str, **overrides) -> dict:
    """Flat TrainingConfig keywords for the tiny random model on CPU, fast settings."""
    kwargs = dict(
        model_name="tiny",
        model_path="random",
        dtype="float32",
        lora_rank=8,
        lr=1e-2,
        warmup_steps=2,
        seq_len=48,
        batch_size=8,
        pack=False,
        eval_fraction=0.2,
        log_every=4,
        progress=False,
        output_dir=os.path.join(tmp_dir, "run"),
    )
    kwargs.update(overrides)
    return kwargs
