"""The OpenAI wire format Jarvis accepts: strict pydantic models of the request bodies.

Strict: a number sent as a string is a 400, not silently coerced; an argument this server
does not know is a 400 naming it (as OpenAI does), never quietly ignored. Extensions
beyond OpenAI's fields follow vLLM: `top_k`, `min_p`, `repetition_penalty`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from jarvis.api_errors import ApiError
from jarvis.sampling import Sampling


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict | None = None


class _SamplingFields(_Strict):
    model: str = "auto"
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict | None = None
    logprobs: bool | int | None = None
    # vLLM-style extensions
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, lt=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)

    def check_supported(self) -> None:
        """Refuses (400) what this server cannot honour, instead of ignoring it."""
        if self.n != 1:
            raise ApiError(400, "Only n=1 is supported", param="n", code="unsupported_parameter")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(
                    400,
                    f"{name} is not supported; use repetition_penalty (e.g. 1.1) instead",
                    param=name,
                    code="unsupported_parameter",
                )
        if self.logit_bias:
            raise ApiError(
                400, "logit_bias is not supported", param="logit_bias", code="unsupported_parameter"
            )
        if self.logprobs:
            raise ApiError(400, "logprobs are not supported", param="logprobs", code="unsupported_parameter")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ApiError(400, "stop takes at most 4 non-empty strings", param="stop", code="invalid_value")
        if self.stream_options is not None and not self.stream:
            raise ApiError(
                400,
                "stream_options is only allowed when stream is true",
                param="stream_options",
                code="invalid_value",
            )

    def sampling(self, base: Sampling, *, max_tokens: int) -> Sampling:
        """The request's settings over the server's defaults; max_tokens is resolved by the caller."""
        changes = {"max_tokens": max_tokens}
        for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed"):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        if self.stop is not None:
            changes["stop"] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return base.replace(**changes)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.response_format is not None and self.response_format.type != "text":
            raise ApiError(
                400,
                f"response_format {self.response_format.type!r} is not supported: Prime has no constrained "
                "decoding, so JSON output cannot be guaranteed. Ask for JSON in the prompt and parse it yourself.",
                param="response_format",
                code="unsupported_parameter",
            )
        if self.tools or self.tool_choice not in (None, "none"):
            raise ApiError(400, "Tool calling is not supported", param="tools", code="unsupported_parameter")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ApiError(
                400,
                "Give max_tokens or max_completion_tokens, not both",
                param="max_completion_tokens",
                code="invalid_value",
            )

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    def chat_messages(self) -> tuple[list[dict], list[bytes]]:
        """Messages for Prime (developer becomes system) and the decoded images, in order."""
        out, images = [], []
        for i, m in enumerate(self.messages):
            role = "system" if m.role == "developer" else m.role
            if isinstance(m.content, str):
                text = m.content
            else:
                texts = []
                for j, part in enumerate(m.content):
                    if isinstance(part, TextPart):
                        texts.append(part.text)
                    else:
                        if role != "user":
                            raise ApiError(
                                400,
                                "Images are only allowed in user messages",
                                param=f"messages.{i}.content.{j}",
                            )
                        images.append(
                            decode_image(part.image_url.url, param=f"messages.{i}.content.{j}.image_url.url")
                        )
                text = "\n".join(texts)
            if role == "system" and i != 0:
                raise ApiError(400, "A system message may only come first", param=f"messages.{i}.role")
            out.append({"role": role, "content": text})
        if out[-1]["role"] != "user":
            raise ApiError(
                400, "The last message must come from the user", param="messages", code="invalid_value"
            )
        return out, images


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ApiError(400, "prompt must be one string (batches are not supported)", param="prompt")
        if self.echo:
            raise ApiError(400, "echo is not supported", param="echo", code="unsupported_parameter")
        if self.suffix:
            raise ApiError(400, "suffix is not supported", param="suffix", code="unsupported_parameter")
        if self.best_of not in (None, 1):
            raise ApiError(400, "Only best_of=1 is supported", param="best_of", code="unsupported_parameter")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def decode_image(url: str, *, param: str) -> bytes:
    """A `data:image/...;base64,` URL's bytes (the server has no network to fetch others)."""
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ApiError(
            400,
            "Images must be sent inline as data:image/...;base64,... URLs",
            param=param,
            code="invalid_image_url",
        )
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(
            400, f"The image is not valid base64: {e}", param=param, code="invalid_image_url"
        ) from e
