"""The OpenAI routes: /v1/chat/completions, /v1/completions (both streaming as SSE) and /v1/models."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from jarvis_prime import ModelNotAvailableError, PrimeError, UnknownModelError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from jarvis.api_errors import ApiError, from_validation
from jarvis.engine import Done, EngineBusy, EngineStopped, Failed, Job, Piece
from jarvis.openai_schema import ChatCompletionRequest, CompletionRequest
from jarvis.reasoning import ThinkingSplitter, convention_for
from jarvis.router import NoModelError, Route

router = APIRouter()


# ---- shared steps ----


async def parse(request: Request, model_cls):
    body = await request.body()
    try:
        parsed = model_cls.model_validate_json(body or b"")
    except ValidationError as e:
        raise from_validation(e.errors()) from None
    parsed.check_supported()
    return parsed


def served_models(state) -> dict[str, str]:
    """API model id -> what the router loads: installed catalogue models, and a configured
    local directory under its folder name (clients cannot name arbitrary paths)."""
    ids = {i.name: i.name for i in state.router.catalogue() if i.status == "loadable"}
    configured = state.router.config.model
    if configured:
        ids[os.path.basename(configured.rstrip("/")) if os.path.isdir(configured) else configured] = (
            configured
        )
    return ids


async def route_for(state, model_id: str, *, has_image: bool = False, kind: str | None = None) -> Route:
    """Resolves the request's model: "auto" lets the router pick; other ids must be served."""
    name = None
    if model_id not in ("auto", "jarvis", ""):
        served = served_models(state)
        if model_id not in served:
            info = state.router.info(model_id)
            if info is not None:
                raise ApiError(
                    400,
                    f"Model {model_id!r} is not available: {info.status}",
                    param="model",
                    code="model_not_available",
                )
            raise ApiError(
                404,
                f"The model {model_id!r} does not exist. Available: {', '.join(sorted(served)) or 'none'}",
                param="model",
                code="model_not_found",
            )
        name = served[model_id]
    try:
        route = await run_in_threadpool(state.router.route, model=name, kind=kind, has_image=has_image)
    except UnknownModelError as e:
        raise ApiError(404, str(e), param="model", code="model_not_found") from None
    except (ModelNotAvailableError, NoModelError) as e:
        raise ApiError(400, str(e), param="model", code="model_not_available") from None
    except PrimeError as e:
        raise ApiError(400, str(e), param="model") from None
    if has_image and route.kind != "vision":
        raise ApiError(
            400,
            "; ".join(route.notices) or f"{route.name} does not accept images",
            param="messages",
            code="model_not_available",
        )
    return route


def max_tokens_for(state, requested: int | None, prompt_tokens: int, window: int) -> int:
    """The request's max_tokens within the server's limit and the window; a default shrinks
    to what is left of the window, an explicit value that does not fit is a 400."""
    limit = state.config.max_tokens_limit
    if requested is not None and requested > limit:
        raise ApiError(
            400,
            f"max_tokens is {requested}; this server allows at most {limit}",
            param="max_tokens",
            code="invalid_value",
        )
    room = window - prompt_tokens
    if room < 1 or (requested is not None and requested > room):
        raise ApiError(
            400,
            f"This model's maximum context length is {window} tokens. The messages take {prompt_tokens} tokens"
            + (f" and {requested} were requested for the answer" if requested else "")
            + ". Shorten the messages or lower max_tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    return requested if requested is not None else min(state.sampling.max_tokens, room, limit)


def submit(state, start) -> Job:
    try:
        return state.engine.submit(start, loop=asyncio.get_running_loop())
    except EngineBusy as e:
        raise ApiError(
            503, f"The server is overloaded: {e}", code="overloaded", headers={"Retry-After": "1"}
        ) from None
    except EngineStopped:
        raise ApiError(503, "The server is shutting down", code="shutting_down") from None


def api_model_id(route: Route) -> str:
    """The id clients see: a local directory goes by its folder name (as in /v1/models)."""
    return os.path.basename(route.name.rstrip("/")) if os.path.isdir(route.name) else route.name


def _served_id(requested: str, route: Route) -> str:
    return requested if requested not in ("auto", "jarvis", "") else api_model_id(route)


def _notice_headers(route: Route) -> dict:
    if not route.notices:
        return {}
    text = " | ".join(route.notices).encode("ascii", "replace").decode()
    return {"X-Jarvis-Notice": text.replace("\n", " ")}


def _failure(event: Failed) -> ApiError:
    err = event.error
    if isinstance(err, PrimeError):
        return ApiError(400, str(err))
    return ApiError(500, f"Generation failed: {type(err).__name__}: {err}", code="generation_failed")


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Frees the slot of a non-streaming request whose client went away."""
    while not job.finished:
        if await request.is_disconnected():
            job.cancel()
            return
        await asyncio.sleep(0.5)


async def _collect(request: Request, job: Job) -> tuple[list[str], Done]:
    watcher = asyncio.create_task(_watch_disconnect(request, job))
    pieces = []
    try:
        async for event in job:
            if isinstance(event, Piece):
                pieces.append(event.text)
            elif isinstance(event, Failed):
                raise _failure(event)
            else:
                return pieces, event
    finally:
        watcher.cancel()
        job.cancel()
    raise AssertionError("the engine ended a job without Done or Failed")


def sse(obj) -> str:
    return "data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n\n"


def _usage(result) -> dict:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.generated_tokens,
        "total_tokens": result.prompt_tokens + result.generated_tokens,
    }


def _finish(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


# ---- routes ----


@router.get("/v1/models")
def list_models(request: Request):
    state = request.app.state.jarvis
    infos = {i.name: i for i in state.router.catalogue()}
    data = []
    for model_id, name in served_models(state).items():
        info = infos.get(name)
        entry = {"id": model_id, "object": "model", "created": int(state.started), "owned_by": "jarvis-prime"}
        if info is not None:
            entry.update(
                context_length=info.context_length, modalities=list(info.modalities), template=info.template
            )
        data.append(entry)
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    state = request.app.state.jarvis
    req = await parse(request, ChatCompletionRequest)
    messages, images = req.chat_messages()
    route = await route_for(state, req.model, has_image=bool(images))
    prompt_tokens = await run_in_threadpool(route.model.count_tokens, messages)
    max_tokens = max_tokens_for(state, req.requested_max_tokens, prompt_tokens, route.model.context_length)
    sampling = req.sampling(state.sampling, max_tokens=max_tokens)
    job = submit(state, lambda: route.model.chat_stream(messages, **sampling.kwargs()))
    cid, created, served_id = (
        "chatcmpl-" + uuid.uuid4().hex[:24],
        int(time.time()),
        _served_id(req.model, route),
    )
    splitter = ThinkingSplitter(convention=convention_for(route.info.template))
    headers = _notice_headers(route)

    if not req.stream:
        pieces, done = await _collect(request, job)
        parts = splitter.feed("".join(pieces)) + splitter.finish()
        thinking = "" if splitter.reclassified else "".join(t for k, t in parts if k == "thinking")
        message = {"role": "assistant", "content": "".join(t for k, t in parts if k == "answer")}
        if thinking:
            message["reasoning_content"] = thinking
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": served_id,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": _finish(done.result.finish_reason),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(done.result),
                "system_fingerprint": None,
            },
            headers=headers,
        )

    def chunk(delta: dict, finish=None) -> str:
        obj = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": served_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if req.include_usage:
            obj["usage"] = None
        return sse(obj)

    def deltas(parts):
        for kind, text in parts:
            yield chunk({"content": text} if kind == "answer" else {"reasoning_content": text})

    async def stream():
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for event in job:
                if isinstance(event, Piece):
                    for line in deltas(splitter.feed(event.text)):
                        yield line
                elif isinstance(event, Failed):
                    yield sse(_failure(event).body())
                else:
                    for line in deltas(splitter.finish()):
                        yield line
                    yield chunk({}, finish=_finish(event.result.finish_reason))
                    if req.include_usage:
                        yield sse(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": served_id,
                                "choices": [],
                                "usage": _usage(event.result),
                            }
                        )
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


@router.post("/v1/completions")
async def text_completions(request: Request):
    state = request.app.state.jarvis
    req = await parse(request, CompletionRequest)
    route = await route_for(state, req.model)
    prompt = req.text
    # The chat-template count is an upper bound of the raw prompt's tokens: a safe check.
    prompt_tokens = await run_in_threadpool(route.model.count_tokens, prompt)
    max_tokens = max_tokens_for(state, req.requested_max_tokens, prompt_tokens, route.model.context_length)
    sampling = req.sampling(state.sampling, max_tokens=max_tokens)
    # raw=True: a completion continues the text as given, without the chat template.
    job = submit(state, lambda: route.model.stream(prompt, raw=True, **sampling.kwargs()))
    cid, created, served_id = "cmpl-" + uuid.uuid4().hex[:24], int(time.time()), _served_id(req.model, route)
    headers = _notice_headers(route)

    def body(text: str, finish=None) -> dict:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": served_id,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        }

    if not req.stream:
        pieces, done = await _collect(request, job)
        out = body("".join(pieces), _finish(done.result.finish_reason))
        out["usage"] = _usage(done.result)
        return JSONResponse(out, headers=headers)

    async def stream():
        try:
            async for event in job:
                if isinstance(event, Piece):
                    yield sse(body(event.text))
                elif isinstance(event, Failed):
                    yield sse(_failure(event).body())
                else:
                    yield sse(body("", _finish(event.result.finish_reason)))
                    if req.include_usage:
                        yield sse({**body("", None), "choices": [], "usage": _usage(event.result)})
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )
