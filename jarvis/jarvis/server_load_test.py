"""A bounded load test: 16 concurrent streaming clients x 3 requests each, zero errors,
every stream well-formed and identical to what Prime gives for that prompt alone, and the
streams decoded together in shared batched steps.

Run: bazel test //jarvis:server_load_test
"""

import asyncio
import json
import sys

import httpx
import pytest
from jarvis_prime import PrimeModel

from jarvis.live_server import running
from jarvis.tiny_llama import make_tiny_llama

CLIENTS, REQUESTS, MAX_TOKENS = 16, 3, 12


def _prompt(client, i):
    return [{"role": "user", "content": f"Client {client} asks question {i}: what is {client * 7 + i}?"}]


async def _stream(http, url, messages):
    body = {
        "model": "auto",
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, await r.aread()
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(line.startswith("data: ") for line in lines)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    finish = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finish in (["stop"], ["length"])
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])


async def _load(url, state):
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, state.engine.stats()["active"])
            await asyncio.sleep(0.01)

    async def client(k, http):
        return [await _stream(http, url, _prompt(k, i)) for i in range(REQUESTS)]

    watcher = asyncio.create_task(watch())
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        results = await asyncio.gather(*(client(k, http) for k in range(CLIENTS)), return_exceptions=True)
    watcher.cancel()
    return results, peak


def test_sixteen_concurrent_streaming_clients(tmp_path):
    model_dir = make_tiny_llama()
    direct = PrimeModel.from_pretrained(model_dir)
    with running(str(tmp_path), model_dir) as server:
        results, peak = asyncio.run(_load(server.url, server.state))
        assert server.state.engine.stats() == {"active": 0, "queued": 0}
        served, _ = server.state.router.load(model_dir)
        batching = dict(served.engine.engine.stats)  # Prime's generation engine under the server
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    for k, texts in enumerate(results):
        for i, text in enumerate(texts):
            expected = direct.chat(
                _prompt(k, i), max_tokens=MAX_TOKENS, temperature=0.0, repetition_penalty=1.0
            ).text
            assert text == expected, f"client {k} request {i}"
    assert peak >= CLIENTS // 2, f"streams were not served concurrently (peak {peak} active)"
    # Continuous batching: streams shared decode steps (one request per step would need a step per token).
    assert batching["steps"] * 3 < batching["decoded"], batching


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
