"""The real offline default model, prime-135m-chat-v1 (SmolLM2-135M-Instruct), on both backends.

Quantization quality, measured against float32 on the same backend:
- greedy agreement: the float model answers PROMPTS greedily; the quantized model predicts
  every token of those answers teacher-forced; the share it gets right must reach
  AGREEMENT[quantization];
- perplexity on chatterbot-corpus conversations the model was not tuned on (the last
  HELD_OUT in corpus order, first PPL_TOKENS tokens each), printed per quantization.
"""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jarvis_prime import PrimeModel
from jarvis_prime.evaluate import chatterbot_texts, greedy_agreement, perplexity
from jarvis_prime.store import Store

MODEL = "prime-135m-chat-v1"
BACKENDS = ["jax", "mlx"]
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is machine learning?",
]
ANSWER_TOKENS = 20
AGREEMENT = {"8bit": 0.90, "4bit": 0.60}
HELD_OUT = {"jax": 24, "mlx": 8}  # MLX on Linux CPU reads ~10 tokens/s: fewer texts there
PPL_TOKENS = 64
# Perplexity may rise at most this much over float32.
PPL_RATIO = {"8bit": 1.05, "4bit": 2.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(os.environ.get("PRIME_TEST_HOME") or str(tmp_path_factory.mktemp("home")))


_models = {}


def report(capsys, line: str) -> None:
    """Measurements belong in the test log even when the test passes."""
    with capsys.disabled():
        print("\n" + line, flush=True)


def load(store, backend, quantization):
    key = (backend, quantization)
    if key not in _models:
        _models[key] = PrimeModel.from_pretrained(
            MODEL, backend=backend, quantization=quantization or "none", store=store
        )
    return _models[key]


@pytest.mark.parametrize("backend", BACKENDS)
def test_paris(store, backend, capsys):
    model = load(store, backend, None)
    assert model.info.name == MODEL and model.backend == backend and model.quantization is None
    result = model.generate("What is the capital of France?", max_tokens=24)
    report(capsys, f"{backend}: {result.text!r} ({result.tokens_per_second:.1f} tok/s)")
    assert "Paris" in result.text
    assert result.finish_reason == "stop"


def test_the_promised_api_verbatim(store, monkeypatch):
    """README's three lines; without the 7B here, the offline default stands in (with a warning)."""
    monkeypatch.setenv("PRIME_HOME", store.root)
    from jarvis_prime import PrimeWarning

    with pytest.warns(PrimeWarning, match="prime-135m-chat-v1 instead of prime-7b-chat-v1"):
        model = PrimeModel.from_pretrained("prime-7b-chat-v1", quantization="8bit")
    response = model.generate("What is machine learning?")
    assert model.info.name == MODEL and model.requested == "prime-7b-chat-v1" and model.quantization == "8bit"
    assert "learning" in str(response).lower() and response.generated_tokens > 5


def test_backends_agree_on_the_real_model(store):
    answers = {b: load(store, b, None).generate(PROMPTS[0], max_tokens=ANSWER_TOKENS).token_ids for b in BACKENDS}
    assert answers["jax"] == answers["mlx"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_greedy_agrees_with_float32(store, backend, quantization, capsys):
    reference = load(store, backend, None)
    quantized = load(store, backend, quantization)
    share = greedy_agreement(reference, quantized, PROMPTS, max_tokens=ANSWER_TOKENS)
    report(capsys, f"{backend} {quantization}: {share:.1%} of greedy tokens agree with float32")
    assert share >= AGREEMENT[quantization]


@pytest.mark.parametrize("backend", BACKENDS)
def test_perplexity_per_quantization(store, backend, capsys):
    texts = chatterbot_texts()[-HELD_OUT[backend] :]
    ppl = {q: perplexity(load(store, backend, q), texts, max_tokens=PPL_TOKENS) for q in (None, "8bit", "4bit")}
    report(
        capsys,
        f"{backend} perplexity on {len(texts)} held-out chatterbot conversations: "
        + ", ".join(f"{q or 'float32'} {v:.2f}" for q, v in ppl.items()),
    )
    assert ppl[None] < 1000
    for q in ("8bit", "4bit"):
        assert ppl[q] <= ppl[None] * PPL_RATIO[q], q


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
