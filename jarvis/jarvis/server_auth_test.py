"""The API key rule: loopback may run open; any other bind address needs a key, and then
every request must carry it. The test binds 127.0.0.2 (not the default, still loopback).

Run: bazel test //jarvis:server_auth_test
"""

import sys

import httpx
import openai
import pytest

from jarvis import cli
from jarvis.live_server import running
from jarvis.server import ServerConfig
from jarvis.tiny_llama import make_tiny_llama

KEY = "sk-test-0123456789"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.2", "::", "192.168.1.5"])
def test_non_loopback_needs_a_key(host):
    with pytest.raises(ValueError, match="needs an API key"):
        ServerConfig(host=host)
    ServerConfig(host=host, api_key=KEY)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_may_run_open(host):
    ServerConfig(host=host)


def test_cli_refuses_to_bind_without_a_key(monkeypatch, capsys):
    monkeypatch.delenv("JARVIS_API_KEY", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0", "--no-warmup"]) == 2
    assert "needs an API key" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = ServerConfig(host="127.0.0.2", api_key=KEY)
    with running(str(tmp_path_factory.mktemp("home")), make_tiny_llama(), config=config) as s:
        assert s.url.startswith("http://127.0.0.2:")
        yield s


def _error(response, status, code):
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/v1/chat/completions", CHAT),
        ("GET", "/v1/models", None),
        ("GET", "/health", None),
        ("GET", "/api/conversations", None),
        ("POST", "/v1/completions", {"prompt": "x"}),
    ],
)
def test_every_request_needs_the_key(server, method, path, body):
    url = server.url + path
    _error(httpx.request(method, url, json=body), 401, "missing_api_key")
    _error(
        httpx.request(method, url, json=body, headers={"Authorization": "Bearer wrong"}),
        401,
        "invalid_api_key",
    )
    _error(
        httpx.request(method, url, json=body, headers={"Authorization": f"Basic {KEY}"}),
        401,
        "missing_api_key",
    )
    ok = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert ok.status_code == 200, ok.text


def test_key_is_checked_before_the_body(server):
    huge = b"x" * (8 * 2**20)
    _error(httpx.post(server.url + "/v1/chat/completions", content=huge), 401, "missing_api_key")


def test_openai_client_with_and_without_the_key(server):
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    assert good.chat.completions.create(**CHAT).choices[0].message.role == "assistant"
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=120)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(**CHAT)


def test_page_shell_is_public_but_its_data_is_not(server):
    assert httpx.get(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    assert httpx.get(server.url + "/api/conversations").status_code == 401


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
