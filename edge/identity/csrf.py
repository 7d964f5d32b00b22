"""CSRF protection for the pages and for cookie-authenticated API calls.

Signed-in: the session's own token, sent as the ``csrf`` form field or the
``X-CSRF-Token`` header. Signed-out forms (log in, get a key): a random token
in a cookie that the form must echo (double submit). API calls with a bearer
key need neither: a browser never adds that header by itself.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sanic import Request

from edge.errors import PermissionDenied
from edge.identity.sessions import COOKIE, CSRF_COOKIE, same_token

if TYPE_CHECKING:
    from edge.identity.sessions import Session

__all__ = ["check_csrf", "form_csrf", "form_token"]


async def _session(request: Request) -> Session | None:
    if not hasattr(request.ctx, "session"):
        portal = request.app.ctx.portal
        request.ctx.session = await portal.sessions.load(request.cookies.get(COOKIE))
    session: Session | None = request.ctx.session
    return session


def form_csrf(request: Request) -> str | None:
    """The CSRF token a request carries: the ``X-CSRF-Token`` header or the ``csrf``
    form field."""
    header: str | None = request.headers.get("x-csrf-token")
    if header:
        return header
    try:
        form = request.form
    except Exception:  # not a form body
        return None
    return form.get("csrf") if form else None


async def form_token(request: Request) -> str:
    """The token a page must put in its forms (and set as a cookie when signed out)."""
    session = await _session(request)
    if session is not None:
        return session.csrf
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
        request.ctx.new_csrf_cookie = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request without the right token (403)."""
    session = await _session(request)
    expected = session.csrf if session is not None else request.cookies.get(CSRF_COOKIE)
    if not same_token(form_csrf(request), expected):
        raise PermissionDenied("The form has expired or did not come from this site; "
                               "reload the page and try again.", code="csrf_failed")
