"""The OpenAI-compatible HTTP server (FastAPI on uvicorn) with the web chat page at `/`.

Run it:  bazel run //jarvis:assistant -- serve --port 8000
Then:    curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \
           -d '{"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}'

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health
(completions.py); the page's conversation API under /api (web_api.py); the page itself.
Generation happens on the engine's worker thread; handlers only wait on asyncio queues,
so concurrent clients never block each other or the event loop.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Self

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import jarvis
from jarvis import completions, conversation, guards, web_api
from jarvis.api_errors import ApiError, error_body, from_validation
from jarvis.engine import Engine, EngineConfig
from jarvis.memory import Memory
from jarvis.router import Router, RouterConfig
from jarvis.sampling import DEFAULT, Sampling

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # required when `host` is not loopback
    max_request_bytes: int = 4 * 2**20
    max_tokens_limit: int = 4096  # the most a request may ask for
    body_timeout: float = 30.0  # seconds for a request body to arrive
    warmup: bool = True  # load the chat model and compile one generation before serving

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServerConfig.port must be in [0, 65535], got {self.port}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"ServerConfig.max_request_bytes must be >= 1024, got {self.max_request_bytes}")
        if self.max_tokens_limit < 1:
            raise ValueError(f"ServerConfig.max_tokens_limit must be >= 1, got {self.max_tokens_limit}")
        guards.check_bind(self.host, self.api_key)


@dataclasses.dataclass
class State:
    """What the handlers share: reached through `request.app.state.jarvis`."""

    config: ServerConfig
    router: Router
    engine: Engine
    memory: Memory
    sampling: Sampling
    started: float = dataclasses.field(default_factory=time.time)


def create_app(state: State) -> FastAPI:
    app = FastAPI(title="Jarvis", version=jarvis.__version__, docs_url=None, redoc_url=None)
    app.state.jarvis = state
    app.include_router(completions.router)
    app.include_router(web_api.router)
    # follow_symlink: under Bazel the files are runfiles symlinks (requests still cannot leave the folder).
    app.mount("/static", StaticFiles(directory=STATIC_DIR, follow_symlink=True), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(os.path.join(STATIC_DIR, "index.html"))

    @app.get("/health")
    def health():
        return {
            "status": "ok",
            "version": jarvis.__version__,
            "models_loaded": state.router.loaded(),
            "uptime_seconds": round(time.time() - state.started, 1),
            **state.engine.stats(),
        }

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return from_validation(list(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"No route {request.method} {request.url.path}", 405: "Method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse(
            error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return JSONResponse(error_body(500, f"Internal error: {type(exc).__name__}: {exc}"), status_code=500)

    # Outermost first: the key is checked before a byte of the body is read.
    app.add_middleware(
        guards.BodyLimitMiddleware,
        max_bytes=state.config.max_request_bytes,
        timeout=state.config.body_timeout,
    )
    app.add_middleware(
        guards.ApiKeyMiddleware, api_key=state.config.api_key, public_paths=("/", "/favicon.ico")
    )
    return app


def build_state(
    config: ServerConfig,
    *,
    router_config: RouterConfig | None = None,
    engine_config: EngineConfig | None = None,
    sampling: Sampling | None = None,
    home: str | None = None,
) -> State:
    engine_config = engine_config or EngineConfig()
    router_config = router_config or RouterConfig()
    if router_config.slots is None:  # Prime batches as many conversations as the server runs at once
        router_config = dataclasses.replace(router_config, slots=engine_config.max_active)
    router = Router(router_config)
    sampling = sampling or DEFAULT
    if config.warmup:
        conversation.warm_up(router.route(), sampling)
    return State(
        config=config,
        router=router,
        engine=Engine(engine_config),
        memory=Memory.open(home),
        sampling=sampling,
    )


def _uvicorn(app: FastAPI, config: ServerConfig) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            timeout_keep_alive=5,
            access_log=False,
        )
    )


def serve(state: State) -> None:
    """Serves until Ctrl-C, then stops the engine and closes the memory."""
    server = _uvicorn(create_app(state), state.config)
    print(
        f"Jarvis {jarvis.__version__} serving http://{_url_host(state.config.host)}:{state.config.port}/ "
        f"(model {state.router.chat_model_name()}; Ctrl-C stops)",
        flush=True,
    )
    try:
        server.run()
    finally:
        state.engine.close()
        state.memory.close()


class Background:
    """The server on a thread, for tests and the benchmark: `with Background(state) as s: s.url`."""

    def __init__(self, state: State):
        self.state = state
        self._server = _uvicorn(create_app(state), state.config)
        self._thread = threading.Thread(target=self._server.run, name="jarvis-uvicorn", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.time() > deadline:
                raise RuntimeError(
                    f"the server did not start on {self.state.config.host}:{self.state.config.port}"
                )
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.state.config.host)}:{self.port}"

    def __exit__(self, *exc):
        self._server.should_exit = True
        self._thread.join(15)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
