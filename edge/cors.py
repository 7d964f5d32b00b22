"""CORS for browser apps that call the API directly: off unless origins are configured.

``PORTAL_CORS_ORIGINS`` lists the origins allowed (comma-separated, or ``*``). Only the
API under ``/v1/`` takes part: the pages, the admin API and the webhooks never answer a
foreign origin. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is
answered here, before any route, key or Redis is touched; an allowed origin's answers
expose the headers SDKs read (request id, cost, ``Retry-After``, rate limits). Nothing is
registered when the setting is empty, so the request path pays nothing then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sanic import HTTPResponse

if TYPE_CHECKING:
    from sanic import Request, Sanic

__all__ = ["CorsPolicy", "install_cors"]

#: What the API answers may show to a page's script.
EXPOSED = ("x-request-id, x-portal-request-id, x-portal-cost-micros, x-portal-cost-usd, "
           "x-portal-balance-usd, retry-after, x-ratelimit-limit-requests, "
           "x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
           "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens")
#: Seconds a browser may keep a preflight's answer.
MAX_AGE = 600
#: Longest list of request headers a preflight may ask for (they are echoed back).
MAX_ASKED = 1000
_METHODS = "GET, POST, OPTIONS"


class CorsPolicy:
    """The origins allowed; ``origins``: ``PORTAL_CORS_ORIGINS`` as configured."""

    def __init__(self, origins: str) -> None:
        listed = {o.strip().rstrip("/") for o in origins.split(",") if o.strip()}
        self.any = "*" in listed
        self.origins = frozenset(listed - {"*"})

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allowed(self, request: Request) -> str | None:
        """The origin to allow for ``request`` (an API request from an allowed origin)."""
        origin = request.headers.get("origin")
        if not origin or not request.path.startswith("/v1/"):
            return None
        return origin if self.any or origin in self.origins else None

    async def preflight(self, request: Request) -> HTTPResponse | None:
        """Answer a preflight at once (request middleware); None for any other request."""
        if request.method != "OPTIONS" or \
                "access-control-request-method" not in request.headers:
            return None
        origin = self.allowed(request)
        if origin is None:  # no CORS headers: the browser refuses the call
            return HTTPResponse(status=204, headers={"vary": "origin"})
        asked = request.headers.get("access-control-request-headers", "")[:MAX_ASKED]
        headers = {"access-control-allow-origin": origin, "vary": "origin",
                   "access-control-allow-methods": _METHODS,
                   "access-control-max-age": str(MAX_AGE)}
        if asked:
            headers["access-control-allow-headers"] = asked
        return HTTPResponse(status=204, headers=headers)

    async def decorate(self, request: Request, response: HTTPResponse) -> None:
        """Let an allowed origin read the answer (response middleware)."""
        if response is None:
            return
        origin = self.allowed(request)
        if origin is not None:
            response.headers["access-control-allow-origin"] = origin
            response.headers["access-control-expose-headers"] = EXPOSED
            response.headers["vary"] = "origin"


def install_cors(app: Sanic, origins: str) -> CorsPolicy:
    """Register the policy's middleware on ``app`` when ``origins`` allows any."""
    policy = CorsPolicy(origins)
    if policy.enabled:
        app.on_request(policy.preflight, priority=100)
        app.on_response(policy.decorate)
    return policy
