"""Errors a simnode answers, in the shapes vLLM's OpenAI server uses.

Exception tree::

    SimError                     {"error": {"message", "type", "param", "code"}}
    ├── BadRequest               400 BadRequestError (engine-side validation)
    ├── InvalidBody              400 "Bad Request" (FastAPI request validation)
    ├── ModelNotFound            404 NotFoundError
    ├── GenerationFailed         500 InternalServerError
    └── InjectedStatus           any status, from ``fail_status``

Unauthorized requests and unknown routes have their own, non-OpenAI bodies in vLLM;
see :data:`UNAUTHORIZED_BODY` and :func:`route_error_body`.
"""

from __future__ import annotations

import json
from http import HTTPStatus

__all__ = [
    "UNAUTHORIZED_BODY",
    "BadRequest",
    "GenerationFailed",
    "InjectedStatus",
    "InvalidBody",
    "ModelNotFound",
    "SimError",
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


class InvalidBody(SimError):
    """A body that fails request validation (bad JSON, missing field), as FastAPI reports it."""

    err_type = "Bad Request"

    def __init__(self, kind: str, loc: tuple[object, ...], msg: str) -> None:
        detail = {"type": kind, "loc": ("body", *loc), "msg": msg}
        super().__init__(f"[{detail!r}]")


class ModelNotFound(SimError):
    """The request names a model this node does not serve."""

    status = 404
    err_type = "NotFoundError"

    def __init__(self, model: object) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model")


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
