"""The portal's exceptions, and the two functions that turn them into OpenAI-shaped bodies.

Exception tree (subclasses defined elsewhere are named with their module)::

    PortalError
     ├── APIError                 an answer to an API client, in OpenAI's shape
     │    ├── InvalidRequest          400 invalid_request_error
     │    │    ├── Unprocessable        422 (a node's own refusal)
     │    │    └── BodyTooLarge         413 request_too_large (raised nowhere: a body
     │    │                             over the limit gets Sanic's own 413, below)
     │    ├── InvalidAPIKey           401 invalid_api_key
     │    ├── InsufficientCredit      402 insufficient_quota
     │    ├── PermissionDenied        403 permission_denied
     │    ├── ModelNotFound           404 model_not_found
     │    ├── NotFound                404 not_found
     │    ├── RateLimited             429 rate_limit_exceeded (Retry-After)
     │    │    └── NodesBusy            429 nodes_busy: every node full (Retry-After)
     │    ├── NodeFailed              502 upstream_error (the node broke off after answering)
     │    │    └── NodeTimedOut         504 upstream_timeout
     │    ├── ModelWarming            503 model_warming (Retry-After)
     │    └── ServiceUnavailable      503 service_unavailable
     │         ├── NodesUnavailable     503 upstream_unavailable (Retry-After)
     │         ├── ScalingOut           503 scaling_out: full, a node on its way
     │         ├── HotStoreHealing      (edge.billing.reservations) Redis is being healed
     │         └── PaymentsOff          (edge.payments.config) 503 payments_off
     ├── WebhookRefused           (edge.payments.events) a Stripe delivery refused with 400
     ├── StripeUnreachable        (edge.payments.reconcile) Stripe did not answer
     ├── FleetError               (dramatiq_actors.fleet) an EC2 call failed
     └── StoreUnavailable         raised nowhere: Redis and SQL failures arrive as redis-py's
                                  and Tortoise's own exceptions (below)

An :class:`APIError` is raised wherever a request is refused: by the views, and also
by the domain under them (:mod:`edge.identity.auth`, :mod:`edge.billing.reservations`,
:mod:`edge.metering.call`, :mod:`edge.intake`, :mod:`edge.jsonbody`). The app's error
handler (``OpenAIErrorHandler`` in :mod:`edge.app`) answers it with
:func:`api_error_payload`. The same handler uses :func:`error_payload` for the
errors that are not ours:

- Sanic's own: 404, 405, 408 for a head or body sent too slowly, 413 for a body
  over ``max_body_bytes``;
- a value that does not fit a column: 400 ``invalid_value``;
- Redis or the database unreachable or failing: 503 ``service_unavailable`` with
  ``Retry-After: 5``;
- anything else: 500 ``internal_error``.

On ``/v1/messages`` the same errors are answered in Anthropic's shape instead
(:func:`anthropic_error_payload`), as its SDK reads them. ``Retry-After`` is never
more than :data:`MAX_RETRY_AFTER` seconds, a wait the SDKs honour.

Pages get the same error as HTML. Three other places build error bodies themselves:

- the stream relays write the error event that ends a stream the node broke, in
  the route's shape (:mod:`edge.metering.sse`, :mod:`edge.metering.event_streams`);
- :mod:`dramatiq_actors.jobs` stores a failed job's ``{"message", "code"}``;
- the chat sends ``error`` events in its own protocol (:mod:`edge.chat.protocol`).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "APIError",
    "BodyTooLarge",
    "InsufficientCredit",
    "InvalidAPIKey",
    "InvalidRequest",
    "ModelNotFound",
    "ModelWarming",
    "NodeFailed",
    "NodeTimedOut",
    "NodesBusy",
    "NodesUnavailable",
    "NotFound",
    "PermissionDenied",
    "PortalError",
    "RateLimited",
    "ScalingOut",
    "ServiceUnavailable",
    "StoreUnavailable",
    "Unprocessable",
    "anthropic_error_payload",
    "error_payload",
    "retry_after_value",
]


class PortalError(Exception):
    """Root of the tree above (some of the portal's exceptions derive from built-in ones
    instead, such as :class:`edge.settings.ConfigError`, a ``ValueError``)."""


class StoreUnavailable(PortalError):
    """Redis or the SQL database did not answer."""


class APIError(PortalError):
    """An error answered to an API client as ``{"error": {...}}``."""

    status: ClassVar[int] = 400
    type: ClassVar[str] = "invalid_request_error"
    #: OpenAI's ``code`` field: the class's, unless one error is given its own
    #: (a node's 400/422 passes its ``code`` on).
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": retry_after_value(self.retry_after)}


class InvalidRequest(APIError):
    status = 400


class Unprocessable(InvalidRequest):
    """A node's 422: the request is well-formed but not one the model can serve."""

    status = 422


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class InvalidAPIKey(APIError):
    status = 401
    code = "invalid_api_key"


class InsufficientCredit(APIError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class PermissionDenied(APIError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(APIError):
    status = 404
    code = "model_not_found"


class NotFound(APIError):
    status = 404
    code = "not_found"


class RateLimited(APIError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NodesBusy(RateLimited):
    """Every node of the model runs as many calls as it takes, and none came free in
    the time a call may wait for one (admission control)."""

    code = "nodes_busy"


class NodeFailed(APIError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class NodeTimedOut(NodeFailed):
    status = 504
    code = "upstream_timeout"


class ModelWarming(APIError):
    status = 503
    type = "service_unavailable"
    code = "model_warming"


class ServiceUnavailable(APIError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class ScalingOut(ServiceUnavailable):
    """Every node of the model is full and another is on its way."""

    code = "scaling_out"


class NodesUnavailable(ServiceUnavailable):
    """Every node of the model that was tried refused or failed before answering."""

    code = "upstream_unavailable"


#: The longest ``Retry-After`` the ``openai`` and ``anthropic`` SDKs wait for: given a longer
#: one, they fall back to their own backoff of a few seconds and soon give up. A model
#: that needs longer says so in the message, and the client that retries after this
#: many seconds is told again.
MAX_RETRY_AFTER = 60


def retry_after_value(seconds: float) -> str:
    """A ``Retry-After`` the SDKs honour: whole seconds from 1 to :data:`MAX_RETRY_AFTER`."""
    return str(min(MAX_RETRY_AFTER, max(1, int(seconds))))


#: Anthropic's error ``type`` for each status (its API's, which its SDK maps back).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    402: "billing_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 422: "invalid_request_error",
                    429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


def anthropic_error_payload(status: int, message: str,
                            request_id: str | None = None) -> dict[str, Any]:
    """The body Anthropic's API and SDK use for errors (``/v1/messages``)."""
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500
                                else "api_error")
    payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        payload["request_id"] = request_id
    return payload


def error_payload(message: str, *, type: str = "invalid_request_error",
                  code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The body OpenAI's API and SDKs use for errors."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def api_error_payload(exc: APIError) -> dict[str, Any]:
    return error_payload(exc.message, type=exc.type, code=exc.code, param=exc.param)
