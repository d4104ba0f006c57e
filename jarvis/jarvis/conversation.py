"""One turn of a stored conversation: context from memory, fitted to the window, and the
answer saved back. The REPL and the web page's API share it.

    turn = prepare_turn(memory, conv, route, "Hi!", sampling)   # saves the user message
    ... stream route.model.chat_stream(turn.messages, **sampling.kwargs()) ...
    save_answer(memory, turn, route, sampling, answer, thinking, result)
"""

from __future__ import annotations

import dataclasses

from jarvis import context
from jarvis.memory import Conversation, Memory, Message
from jarvis.reasoning import ThinkingSplitter, convention_for
from jarvis.router import Route
from jarvis.sampling import Sampling

DEFAULT_SYSTEM_PROMPT = "You are Jarvis, a helpful and concise assistant."


@dataclasses.dataclass(frozen=True)
class Turn:
    conversation_id: str
    user_message: Message
    messages: list[dict]  # what the model sees
    system_prompt: str | None
    fitted: context.Fitted
    notice: str | None  # the context-trimming notice, if any


def system_prompt_for(custom: str | None, route: Route) -> str | None:
    """A conversation's own prompt ("" for none); by default Jarvis's, except that a
    reasoning model keeps its template's instructions (Prime adds them when none is given)."""
    if custom is not None:
        return custom or None
    return None if route.kind == "reasoning" else DEFAULT_SYSTEM_PROMPT


def prepare_turn(
    memory: Memory,
    conv: Conversation,
    route: Route,
    user_text: str,
    sampling: Sampling,
    *,
    attachments: tuple[str, ...] = (),
) -> Turn:
    """Fits history + the new message into the window (ContextOverflowError when even the
    new message alone does not fit), then saves the user message."""
    system = system_prompt_for(conv.system_prompt, route)
    history = [m.as_chat() for m in memory.messages(conv.id) if m.role in ("user", "assistant")]
    wanted = ([{"role": "system", "content": system}] if system else []) + history
    wanted.append({"role": "user", "content": user_text})
    window = route.model.context_length
    fitted = context.fit(wanted, route.model.count_tokens, window=window, reserve=sampling.max_tokens)
    user = memory.add_message(conv.id, "user", user_text, attachments=attachments)
    return Turn(
        conversation_id=conv.id,
        user_message=user,
        messages=fitted.messages,
        system_prompt=system,
        fitted=fitted,
        notice=fitted.notice(route.name, window),
    )


def splitter_for(route: Route) -> ThinkingSplitter:
    return ThinkingSplitter(convention=convention_for(route.info.template))


def save_answer(
    memory: Memory, turn: Turn, route: Route, sampling: Sampling, answer: str, thinking: str, result
) -> Message:
    """Stores the answer with its model, settings and speed (a stopped answer keeps its text)."""
    return memory.add_message(
        turn.conversation_id,
        "assistant",
        answer,
        reasoning=thinking or None,
        reply_to=turn.user_message.id,
        system_prompt=turn.system_prompt,
        model=route.name,
        sampling=sampling.to_json(),
        prompt_tokens=result.prompt_tokens if result else None,
        generated_tokens=result.generated_tokens if result else None,
        finish_reason=result.finish_reason if result else "cancelled",
        time_to_first_token=result.time_to_first_token if result else None,
        tokens_per_second=result.tokens_per_second if result else None,
    )


def warm_up(route: Route, sampling: Sampling) -> None:
    """Loads the model (its engine compiles every program before it returns) and reads the
    system prompt into a cache slot, so the first real turn prefills only the user's words."""
    system = system_prompt_for(None, route)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {
            "role": "user",
            "content": "Hello! Could you tell me, in a few words, what you can help me with today?",
        }
    ]
    stream = route.model.chat_stream(messages, **sampling.kwargs())
    try:
        for _ in range(2):  # the prefill, then one decode step
            next(stream, None)
    finally:
        stream.close()
