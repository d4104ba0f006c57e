"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

from fastapi.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """Raised by handlers; turned into an OpenAI-style error response by the app."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, headers=None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": param,
            "code": code,
        }
    }


def from_validation(errors: list[dict]) -> ApiError:
    """The first pydantic error as a 400 naming the field (malformed JSON included)."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"The request body is not valid JSON: {first['msg']}", code="invalid_json")
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return ApiError(
            400, f"Unrecognized request argument supplied: {loc}", param=loc, code="unknown_parameter"
        )
    if first["type"] == "missing":
        return ApiError(
            400, f"Missing required parameter: '{loc}'", param=loc, code="missing_required_parameter"
        )
    if not loc:
        return ApiError(
            400, f"The request body must be a JSON object: {first['msg']}", code="invalid_request"
        )
    given = first.get("input")
    shown = repr(given)[:80] if not isinstance(given, (dict, list)) else type(given).__name__
    return ApiError(
        400, f"Invalid value for '{loc}': {first['msg']} (got {shown})", param=loc, code="invalid_type"
    )
