"""The Sanic application factory and the lifetime of a worker's resources.

``create_app(settings)`` only wires things together. Each worker opens its own
database connection, Redis pool and HTTP client in ``before_server_start`` and
closes them in ``after_server_stop`` (in reverse order of opening).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from sanic import HTTPResponse, Request, Sanic
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import json as json_response
from tortoise.exceptions import BaseORMException, ValidationError

from edge.billing.bookkeeper import start_bookkeeper
from edge.cors import install_cors
from edge.errors import APIError, anthropic_error_payload, api_error_payload, error_payload
from edge.intake import BodyBudget, Intake, PortalRequest
from edge.metering.call import new_request_id
from edge.payments.config import PaymentSettings
from edge.settings import Settings
from edge.store.hotstore import RedisUnavailable
from edge.supervision import watch_workers

if TYPE_CHECKING:
    from edge.chat import ChatService
    from edge.context import PortalContext

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Names the worker process in every response, to tell workers apart when debugging.
_WORKER = str(os.getpid())


class OpenAIErrorHandler(ErrorHandler):
    """Every error, ours or Sanic's, answered in OpenAI's shape; never a stack trace."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):  # the client went away; nobody to tell
            return HTTPResponse(status=499)
        response: HTTPResponse
        if isinstance(exception, APIError):
            response = json_response(api_error_payload(exception), status=exception.status,
                                     headers=exception.headers)
        elif isinstance(exception, ValidationError):  # a client's value does not fit a column
            log.warning("refused on %s %s (%s): %s", request.method, request.path,
                        _trace(request), exception)
            response = json_response(error_payload(
                f"A value does not fit: {exception}", type="invalid_request_error",
                code="invalid_value"), status=400)
        elif isinstance(exception, (*RedisUnavailable, RedisError, BaseORMException)):
            log.error("store unavailable on %s %s (%s): %r", request.method, request.path,
                      _trace(request), exception)
            response = json_response(
                error_payload("The portal's storage is unavailable; try again shortly.",
                              type="service_unavailable", code="service_unavailable"),
                status=503, headers={"retry-after": "5"})
        elif isinstance(exception, SanicException):
            status = exception.status_code
            message = str(exception) or "Request could not be handled."
            code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                    408: "request_timeout"}.get(status)
            kind = "invalid_request_error" if status < 500 else "server_error"
            response = json_response(error_payload(message, type=kind, code=code),
                                     status=status, headers=getattr(exception, "headers", None))
        else:
            log.exception("unhandled error on %s %s (%s)", request.method, request.path,
                          _trace(request), exc_info=exception)
            response = json_response(
                error_payload("The portal failed to handle this request.",
                              type="server_error", code="internal_error"), status=500)
        # Sanic always passes a request, a made-up one for an error before routing.
        if request.path.startswith(_ANTHROPIC_PREFIX):
            response = _anthropic_error(request, response)
        elif _wants_page(request):
            response = _error_page(request, response)
        _tag(request, response)
        return response


def _trace(request: Request) -> str:
    """The id that joins this request's log lines with the client's or Nginx's."""
    return getattr(request.ctx, "trace_id", None) or "-"


#: Paths whose errors are JSON whatever the client accepts.
_API_PREFIXES = ("/v1/", "/api/", "/admin", "/ws/", "/webhooks/", "/metrics", "/healthz",
                 "/readyz", "/openapi.json", "/static/", "/tokenize", "/detokenize")


#: The route whose clients are Anthropic's: its errors are in Anthropic's shape.
_ANTHROPIC_PREFIX = "/v1/messages"


def _anthropic_error(request: Request, response: HTTPResponse) -> HTTPResponse:
    """The same error as Anthropic's API gives it."""
    import json

    try:
        message = json.loads(response.body or b"{}")["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = "Request could not be handled."
    payload = anthropic_error_payload(response.status, message,
                                      getattr(request.ctx, "request_id", None))
    answer = json_response(payload, status=response.status)
    for name, value in response.headers.items():
        if name.lower() != "content-type" and name.lower() != "content-length":
            answer.headers[name] = value
    return answer


def _wants_page(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and \
        not request.path.startswith(_API_PREFIXES)


def _error_page(request: Request, response: HTTPResponse) -> HTTPResponse:
    """The same error as a small page, for people."""
    import json

    from jinja2 import Environment, PackageLoader, select_autoescape

    error = json.loads(response.body or b"{}").get("error", {})
    titles = {400: "That did not work", 401: "Please log in", 403: "Not allowed",
              404: "Page not found", 429: "Slow down"}
    env = Environment(loader=PackageLoader("edge", "templates"),
                      autoescape=select_autoescape(("html",)))
    body = env.get_template("error.html").render(
        status=response.status, title=titles.get(response.status, "Something went wrong"),
        message=error.get("message", ""), key=None, csrf="")
    page = HTTPResponse(body, status=response.status, content_type="text/html; charset=utf-8")
    for name, value in response.headers.items():
        if name.lower() == "retry-after":
            page.headers[name] = value
    return page


def create_app(settings: Settings | None = None, *, name: str = "portal") -> Sanic:
    """Build the portal's Sanic application.

    Parameters:
      settings: configuration; read from the environment when omitted.
      name: Sanic's registry name (unique per process).
    """
    from edge import admin
    from edge.api import (
        admin_catalog,
        admin_keys,
        admin_ledger,
        admin_overview,
        admin_records,
        catalog,
        health,
        key_status,
        usage,
    )
    from edge.chat import api as chat_api
    from edge.chat import views as chat_views
    from edge.console import bp as console_bp
    from edge.console import root_bp as console_root_bp
    from edge.jobs import api as jobs_api
    from edge.payments import bp as payments_bp
    from edge.proxy import views as proxy_views
    from edge.web import views as web_views

    settings = settings or Settings.from_env()
    # Refuses to start with a currency or top-up bound Stripe could not charge exactly.
    PaymentSettings.from_settings(settings)
    app = Sanic(name, error_handler=OpenAIErrorHandler(), request_class=PortalRequest)
    app.config.update({
        "REQUEST_MAX_SIZE": settings.max_body_bytes,
        "RESPONSE_TIMEOUT": int(settings.upstream_timeout) + settings.max_wait + 60,
        "REQUEST_TIMEOUT": 60,
        "KEEP_ALIVE_TIMEOUT": 75,
        "ACCESS_LOG": False,
        "NOISY_EXCEPTIONS": False,
        "FALLBACK_ERROR_FORMAT": "json",
        "MOTD": False,
        "REAL_IP_HEADER": settings.real_ip_header or None,
        "GRACEFUL_SHUTDOWN_TIMEOUT": settings.shutdown_grace,
        "WEBSOCKET_MAX_SIZE": 64 * 1024,
        "WEBSOCKET_PING_INTERVAL": 20,
        "WEBSOCKET_PING_TIMEOUT": 20,
    })
    app.ctx.settings = settings
    # Deadlines and budget of PortalProtocol, which `portal serve` runs the app with.
    app.ctx.intake = Intake(head_timeout=settings.head_timeout,
                            body_timeout=settings.body_timeout,
                            budget=BodyBudget(settings.body_budget_bytes))
    for blueprint in (proxy_views.bp, proxy_views.tokenizer_bp, catalog.bp, key_status.bp,
                      usage.bp, jobs_api.bp, admin.bp, admin_keys.bp, admin_records.bp,
                      admin_catalog.bp, admin_ledger.bp, health.bp, chat_views.bp, chat_api.bp,
                      web_views.bp):
        app.blueprint(blueprint)
    app.blueprint(payments_bp)
    app.blueprint(admin_overview.bp)
    app.blueprint(console_bp)
    app.blueprint(console_root_bp)
    _add_static_files(app)
    install_cors(app, settings.cors_origins)
    app.on_response(_add_request_id)
    app.main_process_ready(watch_workers)
    app.main_process_ready(start_bookkeeper)
    app.before_server_start(_open_resources)
    app.after_server_stop(_close_resources)
    return app


def _add_static_files(app: Sanic) -> None:
    """One route per file of edge/static: any other path under /static/ is a plain 404.

    (Sanic's directory route logs an ERROR traceback for a path "under" a file, such
    as /static/style.css/x, and for a ``..``.)
    """
    root = resources.files("edge").joinpath("static")
    for file in sorted(Path(str(root)).rglob("*")):
        if file.is_file():
            path = file.relative_to(str(root)).as_posix()
            app.static(f"/static/{path}", str(file), name="static_" + path.replace(".", "_")
                       .replace("/", "_"))


#: Headers every page gets: no framing, no sniffing, scripts only from here.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _tag(request: Request, response: HTTPResponse) -> None:
    """The request's ids on its answer (see :class:`edge.intake.PortalRequest`)."""
    headers = response.headers
    if "x-request-id" not in headers:
        ctx = request.ctx
        request_id = getattr(ctx, "request_id", None) or new_request_id()
        trace = getattr(ctx, "trace_id", None) or request_id
        headers["x-request-id"] = trace
        if trace != request_id:
            headers["x-portal-request-id"] = request_id


async def _add_request_id(request: Request, response: HTTPResponse) -> None:
    if response is not None:
        _tag(request, response)
        headers = response.headers
        headers["x-portal-worker"] = _WORKER
        if (response.content_type or "").startswith("text/html"):
            for name, value in PAGE_HEADERS.items():
                headers.setdefault(name, value)


async def _open_resources(app: Sanic) -> None:
    from edge.billing.heal import HotWatch
    from edge.billing.heartbeat import new_owner
    from edge.billing.reservations import Billing
    from edge.billing.spool import Spool
    from edge.chat import ChatService
    from edge.chat.hub import RoomHub
    from edge.chat.limits import RoomQuota
    from edge.chat.replies import ReplyRunner
    from edge.db import open_database
    from edge.fleet.boots import BootRequests
    from edge.fleet.registry import Registry
    from edge.fleet.slots import Slots
    from edge.fleet.upstream import make_client
    from edge.identity.console_sessions import ConsoleSessions
    from edge.identity.keys import KeyDirectory, mirror_all_keys
    from edge.identity.pepper import load_pepper
    from edge.identity.sessions import Sessions
    from edge.jobs.waiters import JobWaiters
    from edge.metering.call import Metering
    from edge.store.events import EventListener
    from edge.store.hotstore import HotStore, connect_redis

    settings: Settings = app.ctx.settings
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    await open_database(settings.effective_database_url)
    namespace = settings.redis_namespace
    store = HotStore(connect_redis(settings.redis_url, checked_for=namespace), namespace)
    watch = HotWatch(HotStore(connect_redis(settings.redis_url, pool_size=8), namespace),
                     check_sql=False)
    await watch.ensure()  # a new, flushed or restarted Redis is healed before serving
    owner = new_owner()
    registry = Registry(default_slots=settings.node_slots)
    await registry.reload()
    keys = KeyDirectory(store, ttl=settings.key_cache_ttl)
    job_waiters = JobWaiters()
    from edge.context import PortalContext

    portal = PortalContext(
        settings=settings,
        pepper=load_pepper(settings),
        store=store,
        keys=keys,
        billing=Billing(store, reservation_ttl_ms=int(settings.upstream_timeout * 1000),
                        owner=owner, spool=Spool(settings.data_path / "spool", owner)),
        registry=registry,
        events=EventListener(store, keys, registry),
        http=make_client(connect_timeout=settings.upstream_connect_timeout,
                         timeout=settings.upstream_timeout,
                         max_connections=settings.upstream_max_connections,
                         api_key=settings.node_api_key),
        job_waiters=job_waiters,
    )
    portal.watch = watch
    portal.metering = Metering(
        portal.billing, registry, portal.http, boots=BootRequests(store, settings),
        stopping=portal.stop, max_attempts=settings.upstream_attempts,
        down_seconds=settings.node_cool_down,
        warming_retry_after=settings.warming_retry_after,
        slots=Slots(store, lease=settings.slot_lease, affinity_ttl=settings.affinity_ttl),
        admission_wait=settings.admission_wait)
    portal.events.on("job:", job_waiters.on_event)
    portal.sessions = Sessions(store)
    portal.console_sessions = ConsoleSessions(store, idle=settings.console_idle,
                                              lifetime=settings.console_lifetime)
    portal.worker_id = _WORKER
    hub = RoomHub(store)
    chat = ChatService(hub=hub, replies=ReplyRunner(portal, hub),
                       quota=RoomQuota(store, settings.chat_rooms_per_key))
    app.ctx.portal = portal
    app.ctx.chat = chat
    await mirror_all_keys(store)
    _start_background(portal, chat)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(portal.events.connected.wait(), 5)


def _start_background(portal: PortalContext, chat: ChatService) -> None:
    from edge.billing.heartbeat import heartbeat
    from edge.fleet.housekeeping import housekeeping

    portal.tasks += [
        # First: it must be beating before this worker reserves anything.
        asyncio.create_task(heartbeat(portal.store, portal.billing.owner, portal.stop),
                            name="heartbeat"),
        asyncio.create_task(portal.watch.run(portal.stop), name="hot-watch"),
        asyncio.create_task(portal.billing.run_pending(portal.stop), name="pending"),
        asyncio.create_task(portal.events.run(portal.stop), name="events"),
        asyncio.create_task(housekeeping(portal.registry, portal.stop), name="housekeeping"),
        asyncio.create_task(chat.hub.run(portal.stop), name="chat-hub"),
    ]
    if portal.metering.slots is not None:
        portal.tasks.append(asyncio.create_task(
            portal.metering.slots.keep_leases(portal.stop), name="slot-leases"))


async def _close_resources(app: Sanic) -> None:
    from edge.db import close_database

    portal: PortalContext | None = getattr(app.ctx, "portal", None)
    if portal is None:
        return
    portal.stop.set()
    for task in portal.tasks:
        task.cancel()
    await asyncio.gather(*portal.tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await app.ctx.chat.hub.close()
    await portal.http.aclose()
    if portal.metering.slots is not None:
        await portal.metering.slots.drain()  # the slots of the calls just cut
    with contextlib.suppress(Exception):
        await portal.billing.settle_pending()  # a last try: the spool has the rest
    if portal.billing.spool is not None:
        portal.billing.spool.close()
    await portal.watch.raw.close()
    await portal.store.close()
    await close_database()
