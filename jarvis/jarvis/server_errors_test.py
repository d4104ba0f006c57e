"""Bad requests get OpenAI-style error objects with 4xx statuses, never a 500 or a hang.

Run: bazel test //jarvis:server_errors_test
"""

import base64
import socket
import sys
import time

import httpx
import pytest

from jarvis.live_server import running
from jarvis.server import ServerConfig
from jarvis.tiny_llama import make_tiny_llama

LIMIT = 64 * 1024
USER = [{"role": "user", "content": "hi"}]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = ServerConfig(max_request_bytes=LIMIT, max_tokens_limit=256, body_timeout=1.0)
    with running(
        str(tmp_path_factory.mktemp("home")), make_tiny_llama(context_length=256), config=config
    ) as s:
        yield s


def _check(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] == (
        "authentication_error" if status == 401 else "invalid_request_error"
    )
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def _post(server, body, path="/v1/chat/completions", **kw):
    kw.setdefault("timeout", 30)
    if isinstance(body, (bytes, str)):
        return httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, **kw)
    return httpx.post(server.url + path, json=body, **kw)


CASES = [
    # (body, status, code, param)
    (b"{not json", 400, "invalid_json", None),
    (b"", 400, "invalid_json", None),
    (b"\xff\xfe\x00", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_request", None),
    ({"model": "auto"}, 400, "missing_required_parameter", "messages"),
    ({"model": "auto", "messages": []}, 400, "invalid_type", "messages"),
    ({"model": "auto", "messages": "hi"}, 400, "invalid_type", "messages"),
    ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, 400, None, "messages.0.role"),
    ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, 400, None, None),
    ({"model": "auto", "messages": USER, "temperature": "hot"}, 400, "invalid_type", "temperature"),
    ({"model": "auto", "messages": USER, "max_tokens": "10"}, 400, "invalid_type", "max_tokens"),
    ({"model": "auto", "messages": USER, "max_tokens": 0}, 400, None, "max_tokens"),
    ({"model": "auto", "messages": USER, "temperature": 7}, 400, None, "temperature"),
    ({"model": "auto", "messages": USER, "stream": "yes"}, 400, None, "stream"),
    ({"model": 3, "messages": USER}, 400, None, "model"),
    ({"model": "auto", "messages": USER, "bogus": 1}, 400, "unknown_parameter", "bogus"),
    ({"model": "gpt-4o", "messages": USER}, 404, "model_not_found", "model"),
    ({"model": "prime-7b-vision-v1", "messages": USER}, 400, "model_not_available", "model"),
    ({"model": "auto", "messages": USER, "max_tokens": 100000}, 400, "invalid_value", "max_tokens"),
    (
        {"model": "auto", "messages": [{"role": "user", "content": "word " * 400}]},
        400,
        "context_length_exceeded",
        None,
    ),
    (
        {"model": "auto", "messages": USER, "response_format": {"type": "json_object"}},
        400,
        "unsupported_parameter",
        "response_format",
    ),
    ({"model": "auto", "messages": USER, "response_format": {"type": "yaml"}}, 400, None, None),
    ({"model": "auto", "messages": USER, "n": 2}, 400, "unsupported_parameter", "n"),
    (
        {"model": "auto", "messages": USER, "tools": [{"type": "function"}]},
        400,
        "unsupported_parameter",
        "tools",
    ),
    ({"model": "auto", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, None, "stop"),
    (
        {"model": "auto", "messages": USER, "stream_options": {"include_usage": True}},
        400,
        None,
        "stream_options",
    ),
    ({"model": "auto", "messages": [{"role": "assistant", "content": "hi"}]}, 400, None, "messages"),
    (
        {
            "model": "auto",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],
        },
        400,
        "model_not_available",
        None,
    ),
    (
        {
            "model": "auto",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
            ],
        },
        400,
        "invalid_image_url",
        None,
    ),
    (
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]},
        400,
        None,
        None,
    ),
]


@pytest.mark.parametrize("body,status,code,param", CASES)
def test_chat_bad_requests(server, body, status, code, param):
    _check(_post(server, body), status, code, param)


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"model": "auto"}, 400, "prompt"),
        ({"model": "auto", "prompt": ["a", "b"]}, 400, "prompt"),
        ({"model": "auto", "prompt": "x", "echo": True}, 400, "echo"),
        ({"model": "auto", "prompt": "x", "top_p": 0}, 400, "top_p"),
    ],
)
def test_completion_bad_requests(server, body, status, param):
    _check(_post(server, body, "/v1/completions"), status, param=param)


def test_oversized_requests(server):
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * (LIMIT + 1)}]}
    _check(_post(server, big), 413, "request_too_large")

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(LIMIT // 1024 + 2):
            yield b" " * 1024

    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    _check(r, 413, "request_too_large")


def test_stalled_body_times_out(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mo'
        )
        start = time.time()
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and time.time() - start < 10
    assert '"code":"timeout"' in reply.replace(" ", "")


def test_unknown_routes_and_methods(server):
    _check(httpx.get(server.url + "/v1/nothing"), 404)
    _check(httpx.get(server.url + "/v1/chat/completions"), 405)
    _check(httpx.get(server.url + "/api/conversations/doesnotexist"), 404, "conversation_not_found")
    _check(_post(server, {"rating": 2}, "/api/messages/1/feedback"), 400, param="rating")


def test_server_still_answers(server):
    r = _post(server, {"model": "auto", "messages": USER, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
