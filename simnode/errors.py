"""Errors a simnode answers, in the shapes vLLM's OpenAI server uses.

Exception tree::

    SimError                     {"error": {"message", "type", "param", "code"}}
    ├── BadRequest               400 BadRequestError (engine-side validation)
    ├── InvalidRequest           400/404 invalid_request_error (the Responses API's own)
    ├── InvalidBody              400 "Bad Request" (FastAPI request validation)
    ├── ModelNotFound            404 NotFoundError
    ├── GenerationFailed         500 InternalServerError
    └── InjectedStatus           any status, from ``fail_status``

Unauthorized requests and unknown routes have their own, non-OpenAI bodies in vLLM;
see :data:`UNAUTHORIZED_BODY` and :func:`route_error_body`. On ``/v1/messages`` vLLM
answers the same errors in Anthropic's shape (:meth:`SimError.anthropic_body`), except
request-validation failures, which its app-wide handler answers before the route runs.
"""

from __future__ import annotations

import json
from http import HTTPStatus

__all__ = [
    "UNAUTHORIZED_BODY",
    "BadRequest",
    "ErrorDetail",
    "GenerationFailed",
    "InjectedStatus",
    "InvalidBody",
    "InvalidRequest",
    "ModelNotFound",
    "SimError",
    "anthropic_error_type",
    "error_body",
    "route_error_body",
    "status_error_type",
]

#: vLLM's AuthenticationMiddleware answers 401 with exactly this body.
UNAUTHORIZED_BODY = b'{"error":"Unauthorized"}'


def error_body(message: str, err_type: str, code: int, param: str | None = None) -> bytes:
    """Return vLLM's ``ErrorResponse`` JSON for one error."""
    error = {"message": message, "type": err_type, "param": param, "code": code}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def status_error_type(status: int) -> str:
    """Return the error ``type`` vLLM gives a status: 503 -> ``ServiceUnavailableError``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "Error"
    name = "".join(word[:1].upper() + word[1:] for word in phrase.replace("-", " ").split())
    return name if name.endswith("Error") else name + "Error"


#: ``error.type`` vLLM's Anthropic server gives a status (Anthropic's own vocabulary).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Return the Anthropic ``error.type`` for a status, as vLLM translates it."""
    known = _ANTHROPIC_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def route_error_body(status: int) -> bytes:
    """Return FastAPI's body for a route-level error (``{"detail": "Not Found"}``)."""
    return json.dumps({"detail": HTTPStatus(status).phrase}, separators=(",", ":")).encode()


class SimError(Exception):
    """Root of the errors a simnode answers with; each knows its status and JSON body."""

    status: int = 400
    err_type: str = "BadRequestError"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> bytes:
        """Return the JSON body to answer with."""
        return error_body(self.message, self.err_type, self.status, self.param)

    def anthropic_body(self) -> bytes:
        """Return the body vLLM's ``/v1/messages`` answers: ``{"type":"error","error":...}``."""
        error = {"type": anthropic_error_type(self.status), "message": self.message}
        return json.dumps({"type": "error", "error": error}, separators=(",", ":")).encode()


class BadRequest(SimError):
    """A request the engine refuses (too long, bad parameter), like ``VLLMValidationError``."""

    def __init__(self, message: str, *, param: str | None = None, value: object = None) -> None:
        extras = []
        if param is not None:
            extras.append(f"parameter={param}")
        if value is not None:
            extras.append(f"value={value}")
        if extras:
            message = f"{message} ({', '.join(extras)})"
        super().__init__(message, param=param)


def _summary(value: object) -> object:
    """A bounded stand-in for an offending value, as vLLM's validation handler writes it."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "...[truncated]"
    if isinstance(value, list | tuple | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    return str(value)


#: One pydantic error: its type, location under ``body``, message and offending value.
ErrorDetail = tuple[str, tuple[object, ...], str, object]


class InvalidBody(SimError):
    """A body that fails request validation (bad JSON, missing field), as vLLM reports it.

    vLLM's handler writes ``"1 validation error:\n  {'type': ..., 'loc': 'body.x', ...}"``
    (up to ten such lines) and names the first error's dotted ``loc`` as ``param``.
    """

    err_type = "Bad Request"

    def __init__(
        self,
        kind: str,
        loc: tuple[object, ...],
        msg: str,
        value: object = None,
        *,
        more: tuple[ErrorDetail, ...] = (),
    ) -> None:
        errors = ((kind, loc, msg, value), *more)
        lines = []
        for e_kind, e_loc, e_msg, e_value in errors[:10]:
            path = ".".join(str(part) for part in ("body", *e_loc))
            detail: dict[str, object] = {
                "type": e_kind, "loc": path, "msg": e_msg, "input": _summary(e_value)
            }
            if e_msg.startswith("Value error, "):
                detail["ctx"] = {"error": ValueError(e_msg[len("Value error, ") :])}
            lines.append(f"  {detail!r}")
        count = len(errors)
        label = "error" if count == 1 else "errors"
        if count > 10:
            lines.append(f"  ...and {count - 10} more {label}")
        param = ".".join(str(part) for part in ("body", *loc))
        super().__init__(f"{count} validation {label}:\n" + "\n".join(lines), param=param)

    @classmethod
    def media_type(cls) -> InvalidBody:
        """The refusal of a body that is not ``application/json`` (vLLM's own check)."""
        error = cls.__new__(cls)
        SimError.__init__(
            error,
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
        )
        return error


class InvalidRequest(SimError):
    """An ``invalid_request_error`` of the Responses API (unknown response id, prompt too long)."""

    err_type = "invalid_request_error"

    def __init__(self, message: str, *, status: int = 400, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status = status


class ModelNotFound(SimError):
    """The request names a model this node does not serve."""

    status = 404
    err_type = "NotFoundError"

    def __init__(
        self, model: object, *, aliases: str | None = None, param: str | None = "model"
    ) -> None:
        message = f"The model `{model}` does not exist."
        if aliases is not None:  # newer routes name the served models
            message += f" Valid aliases: {aliases}."
        super().__init__(message, param=param)


class GenerationFailed(SimError):
    """Generation broke part-way (the injected ``fail_after`` fault on a non-streaming request)."""

    status = 500
    err_type = "InternalServerError"

    def __init__(self) -> None:
        super().__init__("Internal server error")


class InjectedStatus(SimError):
    """The ``fail_status`` fault: answer with a chosen status."""

    def __init__(self, status: int) -> None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = f"Error {status}"
        super().__init__(message)
        self.status = status
        self.err_type = status_error_type(status)
