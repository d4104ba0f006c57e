"""Perplexity of a loaded model on held-out text, and the chatterbot corpus that ships on PyPI.

    ppl = perplexity(model, chatterbot_texts()[:50])

Used by the quantization tests and the benchmark to say what 8-bit and 4-bit cost.
"""

from __future__ import annotations

import glob
import math
import os


def chatterbot_texts(limit: int | None = None) -> list[str]:
    """Conversations of chatterbot-corpus (English), one text per conversation, in file order."""
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("chatterbot-corpus is not installed: pip install chatterbot-corpus")
    root = os.path.join(next(iter(spec.submodule_search_locations)), "data", "english")
    texts = []
    for path in sorted(glob.glob(os.path.join(root, "*.yml"))):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        for convo in data.get("conversations", []):
            lines = [str(x).strip() for x in convo if isinstance(x, (str, int, float))]
            if lines:
                texts.append("\n".join(lines))
    return texts[:limit] if limit else texts


def perplexity(model, texts: list[str], *, max_tokens: int = 256) -> float:
    """exp(mean negative log-likelihood) over every predicted token of `texts` (raw, no template)."""
    total, count = 0.0, 0
    for text in texts:
        ids = model.tokenizer.encode(text, add_special_tokens=True)[:max_tokens]
        if len(ids) < 2:
            continue
        logprobs, _ = model.engine.score(ids)
        total -= float(logprobs.sum())
        count += len(logprobs)
    if count == 0:
        raise ValueError("perplexity needs at least one text of two or more tokens")
    return math.exp(total / count)


def greedy_agreement(reference, model, prompts: list[str], *, max_tokens: int = 32) -> float:
    """Share of tokens where `model`'s greedy choice equals `reference`'s, teacher-forced.

    `reference` generates greedily from each prompt; `model` then predicts every position
    of that same continuation in one forward pass, so one early disagreement does not
    derail the rest of the comparison.
    """
    same = total = 0
    for prompt in prompts:
        ids = model.encode_prompt(prompt)
        result = reference.generate(prompt, max_tokens=max_tokens)
        continuation = list(result.token_ids)
        _, predicted = model.engine.score(ids + continuation)
        predicted = predicted[len(ids) - 1 :]
        same += int(sum(int(p) == t for p, t in zip(predicted, continuation)))
        total += len(continuation)
    return same / total
