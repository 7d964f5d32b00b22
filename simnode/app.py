"""Build the Sanic application of a simnode."""

from __future__ import annotations

import hmac
import re
from typing import Any

from sanic import HTTPResponse, Request, Sanic
from sanic.config import Config
from sanic.exceptions import MethodNotAllowed, NotFound
from sanic.log import LOGGING_CONFIG_DEFAULTS

from simnode.config import SimConfig
from simnode.context import SimContext
from simnode.errors import UNAUTHORIZED_BODY, SimError, route_error_body
from simnode.routes import add_routes

__all__ = ["SimApp", "create_app"]

SimApp = Sanic[Config, SimContext]

#: Long enough that ``hang`` and slow streams are never cut by Sanic itself (seconds).
_RESPONSE_TIMEOUT = 7 * 24 * 3600


def quiet_log_config() -> dict[str, Any]:
    """Return Sanic's logging config with its info chatter (MOTD, workers, access) silenced."""
    loggers = {name: dict(logger) for name, logger in LOGGING_CONFIG_DEFAULTS["loggers"].items()}
    for name in ("sanic.root", "sanic.server", "sanic.access", "sanic.websockets"):
        loggers[name]["level"] = "WARNING"
    return {**LOGGING_CONFIG_DEFAULTS, "loggers": loggers}


def app_name(config: SimConfig) -> str:
    """Return a Sanic app name unique per port (Sanic keeps a registry of names)."""
    return re.sub(r"[^a-zA-Z0-9_\-]", "_", f"simnode-{config.host}-{config.port}")


async def _sim_error(request: Request, exc: Exception) -> HTTPResponse:
    assert isinstance(exc, SimError)
    return HTTPResponse(exc.body(), status=exc.status, content_type="application/json")


async def _route_error(request: Request, exc: Exception) -> HTTPResponse:
    status = 405 if isinstance(exc, MethodNotAllowed) else 404
    return HTTPResponse(route_error_body(status), status=status, content_type="application/json")


def _add_auth(app: SimApp, api_key: str) -> None:
    """Require ``Authorization: Bearer <key>`` on ``/v1/*``, as vLLM's ``--api-key`` does."""
    expected = f"Bearer {api_key}".encode()

    async def authenticate(request: Request) -> HTTPResponse | None:
        if request.method == "OPTIONS" or not request.path.startswith("/v1"):
            return None
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return HTTPResponse(UNAUTHORIZED_BODY, status=401, content_type="application/json")

    app.on_request(authenticate)


def create_app(config: SimConfig) -> SimApp:
    """Build a simnode app for ``config``; each worker process calls this once."""
    app: SimApp = Sanic(
        app_name(config),
        ctx=SimContext(config),
        log_config=quiet_log_config(),
    )
    app.config.update(
        {
            "ACCESS_LOG": False,
            "MOTD": False,
            "KEEP_ALIVE_TIMEOUT": config.keep_alive_timeout,
            "KEEP_ALIVE": config.keep_alive_timeout > 0,
            "RESPONSE_TIMEOUT": _RESPONSE_TIMEOUT,
            "REQUEST_TIMEOUT": 60,
            "NOISY_EXCEPTIONS": False,
            # A simulator should stop at once, even with hung requests in flight.
            "GRACEFUL_SHUTDOWN_TIMEOUT": 1.0,
        }
    )
    if config.api_key:
        _add_auth(app, config.api_key)
    add_routes(app)
    app.error_handler.add(SimError, _sim_error)
    app.error_handler.add(NotFound, _route_error)
    app.error_handler.add(MethodNotAllowed, _route_error)
    return app
