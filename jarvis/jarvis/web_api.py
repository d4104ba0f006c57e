"""The web page's API: stored conversations under /api, answered with the same SSE chunks
as /v1/chat/completions plus two Jarvis events (`jarvis.turn` first, `jarvis.saved` last).

  GET    /api/conversations                  newest first
  POST   /api/conversations                  {"system_prompt"?, "model"?} -> the conversation
  GET    /api/conversations/{id}             the conversation and its messages
  DELETE /api/conversations/{id}
  POST   /api/conversations/{id}/messages    {"content", "max_tokens"?, "temperature"?} -> SSE
  POST   /api/messages/{id}/feedback         {"rating": 1 | -1, "correction"?}
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from jarvis import conversation
from jarvis.api_errors import ApiError, from_validation
from jarvis.completions import max_tokens_for, route_for, sse, submit
from jarvis.context import ContextOverflowError
from jarvis.engine import Failed, Piece
from jarvis.memory import NotFoundError

router = APIRouter(prefix="/api")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class NewConversation(_Strict):
    system_prompt: str | None = None
    model: str | None = None


class NewMessage(_Strict):
    content: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


class Feedback(_Strict):
    rating: int = Field(ge=-1, le=1)
    correction: str | None = None


async def _parse(request: Request, model_cls):
    try:
        return model_cls.model_validate_json(await request.body() or b"")
    except ValidationError as e:
        raise from_validation(e.errors()) from None


def _conversation(state, conversation_id: str):
    try:
        return state.memory.conversation(conversation_id)
    except NotFoundError as e:
        raise ApiError(404, str(e), code="conversation_not_found") from None


def _message_json(m) -> dict:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "reasoning": m.reasoning,
        "model": m.model,
        "rating": m.rating,
        "finish_reason": m.finish_reason,
        "generated_tokens": m.generated_tokens,
        "tokens_per_second": m.tokens_per_second,
        "created_at": m.created_at,
    }


@router.get("/conversations")
def list_conversations(request: Request):
    state = request.app.state.jarvis
    return {"data": [dataclasses.asdict(c) for c in state.memory.conversations(limit=100)]}


@router.post("/conversations")
async def create_conversation(request: Request):
    state = request.app.state.jarvis
    req = await _parse(request, NewConversation)
    if req.model is not None:
        await route_for(state, req.model)  # a 404/400 now rather than on the first message
    conv = state.memory.create_conversation(
        model=req.model, system_prompt=req.system_prompt, sampling=state.sampling.to_json()
    )
    return dataclasses.asdict(conv)


@router.get("/conversations/{conversation_id}")
def get_conversation(conversation_id: str, request: Request):
    state = request.app.state.jarvis
    conv = _conversation(state, conversation_id)
    return {
        **dataclasses.asdict(conv),
        "messages": [_message_json(m) for m in state.memory.messages(conv.id)],
    }


@router.delete("/conversations/{conversation_id}")
def delete_conversation(conversation_id: str, request: Request):
    state = request.app.state.jarvis
    conv = _conversation(state, conversation_id)
    state.memory.delete_conversation(conv.id)
    return {"id": conv.id, "deleted": True}


@router.post("/messages/{message_id}/feedback")
async def feedback(message_id: int, request: Request):
    state = request.app.state.jarvis
    req = await _parse(request, Feedback)
    if req.rating == 0:
        raise ApiError(400, "rating must be 1 (good) or -1 (bad)", param="rating")
    try:
        message = state.memory.rate(message_id, req.rating, req.correction)
    except NotFoundError as e:
        raise ApiError(404, str(e), code="message_not_found") from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    return _message_json(message)


@router.post("/conversations/{conversation_id}/messages")
async def send_message(conversation_id: str, request: Request):
    state = request.app.state.jarvis
    req = await _parse(request, NewMessage)
    conv = _conversation(state, conversation_id)
    route = await route_for(state, conv.model or "auto", kind="reasoning" if conv.reasoning else None)
    sampling = state.sampling.replace(
        **({"temperature": req.temperature} if req.temperature is not None else {})
    )
    sampling = sampling.replace(
        max_tokens=max_tokens_for(state, req.max_tokens, 0, route.model.context_length)
    )
    try:
        turn = await run_in_threadpool(
            conversation.prepare_turn, state.memory, conv, route, req.content, sampling
        )
    except ContextOverflowError as e:
        raise ApiError(400, str(e), param="content", code="context_length_exceeded") from None
    job = submit(state, lambda: route.model.chat_stream(turn.messages, **sampling.kwargs()))
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
    splitter = conversation.splitter_for(route)

    def chunk(delta: dict, finish=None) -> str:
        return sse(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": route.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    async def stream():
        answer, thinking, result, saved = [], [], None, False

        def emit(parts):
            for kind, text in parts:
                (answer if kind == "answer" else thinking).append(text)
                yield chunk({"content": text} if kind == "answer" else {"reasoning_content": text})

        def save():
            nonlocal saved
            saved = True
            if splitter.reclassified:
                thinking.clear()
            if not answer and not thinking:
                return None
            return conversation.save_answer(
                state.memory, turn, route, sampling, "".join(answer), "".join(thinking), result
            )

        try:
            notices = [n for n in (*route.notices, turn.notice) if n]
            yield sse(
                {
                    "object": "jarvis.turn",
                    "user_message_id": turn.user_message.id,
                    "model": route.name,
                    "notices": notices,
                }
            )
            async for event in job:
                if isinstance(event, Piece):
                    for line in emit(splitter.feed(event.text)):
                        yield line
                elif isinstance(event, Failed):
                    yield sse(ApiError(500, f"Generation failed: {event.error}").body())
                else:
                    result = event.result
                    for line in emit(splitter.finish()):
                        yield line
                    yield chunk({}, finish=result.finish_reason)
                    message = await run_in_threadpool(save)
                    yield sse(
                        {
                            "object": "jarvis.saved",
                            "message_id": message.id if message else None,
                            "generated_tokens": result.generated_tokens,
                            "tokens_per_second": result.tokens_per_second,
                            "time_to_first_token": result.time_to_first_token,
                        }
                    )
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()
            if not saved:  # the page went away mid-answer: keep what was said
                save()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
