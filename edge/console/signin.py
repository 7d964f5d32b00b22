"""Signing in to the console with the admin token, and out again.

A wrong token counts against the address (``PORTAL_CONSOLE_LOGINS_PER_HOUR``); a right
one opens a console session whose cookie goes to ``/admin`` paths only, is never
readable by scripts, and is not sent by another site's forms (``SameSite=Strict``).
"""

from __future__ import annotations

from sanic import HTTPResponse, Request, redirect

from edge.console.common import PATH, bp, render
from edge.identity.auth import same_secret
from edge.identity.console_sessions import COOKIE
from edge.identity.csrf import check_csrf, form_token
from edge.identity.sessions import CSRF_COOKIE, TTL
from edge.store import keys as redis_keys
from edge.web.common import count_this_hour, counted_this_hour, form_field, set_cookie

__all__ = ["login", "login_form", "logout"]


def _next(request: Request) -> str:
    """Where to go once signed in: a console path the visitor asked for, or the overview."""
    wanted = request.args.get("next") or (request.form.get("next") if request.form else "")
    if wanted and wanted.startswith(PATH) and "//" not in wanted and "\\" not in wanted:
        return wanted
    return PATH


async def _form(request: Request, *, status: int = 200, message: str = "") -> HTTPResponse:
    token = await form_token(request)
    response = await render(request, "console/login.html", status=status, csrf=token,
                            flash=message, next=_next(request))
    fresh = getattr(request.ctx, "new_csrf_cookie", None)
    if fresh:
        set_cookie(request, response, CSRF_COOKIE, fresh, max_age=TTL)
    return response


@bp.get("/login")
async def login_form(request: Request) -> HTTPResponse:
    return await _form(request)


@bp.post("/login")
async def login(request: Request) -> HTTPResponse:
    await check_csrf(request)
    portal = request.app.ctx.portal
    settings = portal.settings
    if not settings.admin_token:
        return await _form(request, status=403,
                           message="The console is disabled: set PORTAL_ADMIN_TOKEN.")
    if await counted_this_hour(request, redis_keys.console_logins) >= \
            settings.console_logins_per_hour:
        return await _form(request, status=429,
                           message="Too many failed sign-ins from this address; try again "
                                   "in an hour.")
    if not same_secret(form_field(request, "token"), settings.admin_token):
        await count_this_hour(request, redis_keys.console_logins)
        return await _form(request, status=401, message="That is not the admin token.")
    session = await portal.console_sessions.open(settings.admin_token)
    response = redirect(_next(request))
    _set_session_cookie(request, response, session.id, settings.console_lifetime)
    return response


def _set_session_cookie(request: Request, response: HTTPResponse, value: str,
                        max_age: int) -> None:
    secure = request.app.ctx.portal.settings.effective_public_url.startswith("https://")
    response.add_cookie(COOKIE, value, path="/admin", httponly=True, samesite="Strict",
                        secure=secure, max_age=max_age)


@bp.post("/logout")
async def logout(request: Request) -> HTTPResponse:
    await request.app.ctx.portal.console_sessions.close(request.cookies.get(COOKIE))
    response = redirect(f"{PATH}/login")
    response.delete_cookie(COOKIE, path="/admin")
    return response
