"""The server with the official openai client and plain HTTP, on loopback, over real Prime
(a tiny random Llama).

Run: bazel test //jarvis:server_test
"""

import json
import os
import sys
import time

import httpx
import openai
import pytest

from jarvis.engine import EngineConfig
from jarvis.live_server import running
from jarvis.tiny_llama import make_tiny_llama

MODEL_ID = os.path.basename(make_tiny_llama())  # a configured model directory is served by folder name


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(
        str(tmp_path_factory.mktemp("home")), make_tiny_llama(), engine=EngineConfig(max_active=4)
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=120
    )


def test_models_and_health(server, client):
    ids = [m.id for m in client.models.list()]
    assert MODEL_ID in ids
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["version"] == "2.0.0"


def test_chat_completion_matches_prime(server, client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    response = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=8, temperature=0)
    direct = server.state.router.load(make_tiny_llama())[0].chat(
        messages, max_tokens=8, temperature=0.0, repetition_penalty=1.0
    )
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == MODEL_ID
    assert choice.message.role == "assistant" and choice.message.content == direct.text
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens == direct.prompt_tokens
    assert response.usage.completion_tokens == direct.generated_tokens
    assert response.usage.total_tokens == direct.prompt_tokens + direct.generated_tokens


def test_chat_streaming_with_usage(client):
    kwargs = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Count to five."}],
        "max_tokens": 10,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["length"], ["stop"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done(server):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert json.loads(e[6:])["object"] == "chat.completion.chunk"


def test_text_completions(client):
    response = client.completions.create(
        model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0
    )
    assert response.object == "text_completion" and response.usage.completion_tokens >= 1
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
        )
    )
    assert streamed == response.choices[0].text


def test_stop_and_seed(client):
    base = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 12}
    a = client.chat.completions.create(**base, temperature=1.0, seed=5).choices[0].message.content
    b = client.chat.completions.create(**base, temperature=1.0, seed=5).choices[0].message.content
    assert a == b
    greedy = client.chat.completions.create(**base, temperature=0).choices[0].message.content
    if len(greedy) > 3:
        stop = greedy[2:4]
        stopped = client.chat.completions.create(**base, temperature=0, stop=[stop]).choices[0]
        assert stop not in stopped.message.content and stopped.finish_reason == "stop"


def test_disconnect_mid_stream_frees_the_slot(server):
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "go on forever"}],
        "max_tokens": 1500,
        "stream": True,
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert server.state.engine.stats()["active"] == 1
    deadline = time.time() + 30
    while server.state.engine.stats()["active"] and time.time() < deadline:
        time.sleep(0.1)
    assert server.state.engine.stats() == {"active": 0, "queued": 0}


def test_web_page_and_conversation_api(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<title>Jarvis</title>" in page.text
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    conv = httpx.post(server.url + "/api/conversations", json={}).json()
    events = []
    with httpx.stream(
        "POST",
        f"{server.url}/api/conversations/{conv['id']}/messages",
        json={"content": "Hello!", "max_tokens": 6},
        timeout=120,
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    assert events[0]["object"] == "jarvis.turn" and events[-1]["object"] == "jarvis.saved"
    text = "".join(
        e["choices"][0]["delta"].get("content", "")
        for e in events
        if e.get("object") == "chat.completion.chunk"
    )
    stored = httpx.get(f"{server.url}/api/conversations/{conv['id']}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"] == text and stored["title"] == "Hello!"
    saved_id = events[-1]["message_id"]
    rated = httpx.post(
        f"{server.url}/api/messages/{saved_id}/feedback", json={"rating": -1, "correction": "Hi!"}
    )
    assert rated.status_code == 200 and rated.json()["rating"] == -1
    listed = httpx.get(server.url + "/api/conversations").json()["data"]
    assert conv["id"] in [c["id"] for c in listed]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
