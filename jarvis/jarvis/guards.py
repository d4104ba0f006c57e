"""Request guards as ASGI middleware: the API key rule and the request size limit.

The key rule: a server bound to loopback (127.0.0.1, localhost, ::1) may run without a
key; any other address needs one, and then every request must carry
`Authorization: Bearer <key>`. The web page's static shell (HTML, JS, CSS; no data) is
served without a key so that a browser can load it and then ask the user for the key.
"""

from __future__ import annotations

import asyncio
import json
import secrets

from jarvis.api_errors import error_body

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def key_required(host: str) -> bool:
    return host not in LOOPBACK_HOSTS


def check_bind(host: str, api_key: str | None) -> None:
    if key_required(host) and not api_key:
        raise ValueError(
            f"Binding {host} exposes the server beyond this machine, so it needs an API key: "
            "pass --api-key or set JARVIS_API_KEY (clients then send 'Authorization: Bearer <key>'), "
            "or bind 127.0.0.1"
        )


async def _send_error(send, status: int, message: str, code: str, headers=()) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """401 for a request without the right bearer token (when a key is set)."""

    def __init__(self, app, *, api_key: str | None, public_paths: tuple[str, ...] = ()):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.public_paths = public_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.api_key is None or self._public(scope):
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return await _send_error(
                send,
                401,
                "Missing API key: send 'Authorization: Bearer <key>'",
                "missing_api_key",
                [(b"www-authenticate", b"Bearer")],
            )
        if not secrets.compare_digest(token.strip(), self.api_key):
            return await _send_error(
                send, 401, "Incorrect API key provided", "invalid_api_key", [(b"www-authenticate", b"Bearer")]
            )
        return await self.app(scope, receive, send)

    def _public(self, scope) -> bool:
        if scope["method"] not in ("GET", "HEAD"):
            return False
        return scope["path"] in self.public_paths or scope["path"].startswith("/static/")


class BodyLimitMiddleware:
    """Reads the whole body first (at most `max_bytes`, within `timeout` seconds), then
    replays it: a bigger body is a 413 and a stalled one a 408, before any handler runs."""

    def __init__(self, app, *, max_bytes: int, timeout: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await _send_error(send, 413, self._too_big(), "request_too_large")
            except ValueError:
                return await _send_error(send, 400, "Invalid Content-Length header", "invalid_request")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        return await _send_error(send, 413, self._too_big(), "request_too_large")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await _send_error(
                send, 408, f"The request body did not arrive within {self.timeout:g} s", "timeout"
            )
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as Starlette expects

        return await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return f"Request body too large: the limit is {self.max_bytes} bytes"
