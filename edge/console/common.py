"""What every console page shares: the blueprint, its guard, rendering, paging.

Every page under ``/admin/console`` but the sign-in needs a console session
(:mod:`edge.identity.console_sessions`); without one the visitor is sent to sign in.
Pages only read: each action on them is a form that ``console.js`` sends to the admin
API (``/admin/...``) with the session's CSRF token, so the console can do nothing the
API cannot, and the audit log names the console as the actor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sanic import Blueprint, HTTPResponse, Request, html, redirect

from edge.admin import console_actor
from edge.api.fields import query_limit
from edge.errors import InvalidRequest
from edge.identity.console_sessions import COOKIE
from edge.identity.csrf import form_csrf
from edge.identity.sessions import same_token
from edge.web.common import templates

__all__ = ["PATH", "bp", "page_limit", "render", "root_bp"]

#: Where the console's pages are (the admin API is beside them, under /admin).
PATH = "/admin/console"
#: Pages open without a session.
_OPEN = (f"{PATH}/login",)

bp = Blueprint("console", url_prefix=PATH)
root_bp = Blueprint("console_root")


@root_bp.get("/admin")
async def console_home(request: Request) -> HTTPResponse:
    return redirect(PATH)


async def require_console(request: Request) -> HTTPResponse | None:
    """Send a visitor without a live console session to the sign-in page; refuse a
    form without the session's CSRF token."""
    if request.path in _OPEN:
        return None
    portal = request.app.ctx.portal
    token = portal.settings.admin_token
    session = await portal.console_sessions.load(request.cookies.get(COOKIE), token) \
        if token else None
    if session is None:
        if request.method != "GET":
            return await render(request, "console/error.html", status=401,
                                message="The console session has ended; sign in again.")
        return redirect(f"{PATH}/login?next={quote(request.path)}")
    if request.method not in ("GET", "HEAD") and not same_token(form_csrf(request),
                                                                session.csrf):
        return await render(request, "console/error.html", status=403,
                            message="The form has expired; reload the page and try again.")
    request.ctx.console_session = session
    request.ctx.admin_actor = console_actor(request)
    return None


# Registered by a call, not as a decorator (see edge.admin).
bp.on_request(require_console)


async def render(request: Request, template: str, *, status: int = 200,
                 **context: Any) -> HTTPResponse:
    """A console page, with the session's CSRF token for its forms; never cached."""
    session = getattr(request.ctx, "console_session", None)
    context.setdefault("csrf", session.csrf if session else "")
    context["signed_in"] = session is not None
    context["section"] = context.get("section", "")
    response = html(templates.get_template(template).render(**context), status=status)
    response.headers["cache-control"] = "no-store"
    return response


def page_limit(request: Request, default: int = 100, most: int = 500) -> int:
    """The ``limit`` query argument as the admin API reads it
    (:func:`edge.api.fields.query_limit`), except that a page shows its default rather
    than refuse one out of range."""
    try:
        return query_limit(request, default=default, most=most)
    except InvalidRequest:
        return default
