"""What every page module shares: the blueprint, templates, the session's key, forms.

The pages are split by subject (``views``: home, sign-up, log in, chat, docs;
``keys``: the account and its keys; ``activity``: spend and usage), all on one
blueprint, which ``edge.web.views`` exports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sanic import Blueprint, HTTPResponse, Request, html, redirect

from edge.api.catalog import model_entry
from edge.billing.money import format_usd
from edge.identity.csrf import form_token
from edge.identity.sessions import COOKIE, CSRF_COOKIE, TTL, session_key

if TYPE_CHECKING:
    from edge.identity.keys import KeyRecord

__all__ = ["bp", "catalog_models", "client_address", "count_this_hour", "counted_this_hour",
           "form_field", "form_list", "render", "set_cookie", "sign_out", "signed_in", "templates"]

bp = Blueprint("web")

# Autoescape is on for every .html template: nothing a user or a model wrote is ever
# rendered as markup (the SVG chart is a template too).
templates = Environment(loader=PackageLoader("edge", "templates"),
                        autoescape=select_autoescape(("html", "svg")), enable_async=False)
#: ``{{ micros|usd }}``: micro-dollars as the pages write USD (``12.50``).
templates.filters["usd"] = format_usd


async def render(request: Request, template: str, *, status: int = 200,
                 **context: Any) -> HTTPResponse:
    """A page, with what every page needs (the signed-in key, a CSRF token)."""
    portal = request.app.ctx.portal
    if "key" not in context:
        context["key"] = await session_key(portal, request.cookies.get(COOKIE))
    context["csrf"] = await form_token(request)
    response = html(templates.get_template(template).render(**context), status=status)
    token = getattr(request.ctx, "new_csrf_cookie", None)
    if token:
        set_cookie(request, response, CSRF_COOKIE, token, max_age=TTL)
    return response


def set_cookie(request: Request, response: HTTPResponse, name: str, value: str,
               max_age: int) -> None:
    secure = request.app.ctx.portal.settings.effective_public_url.startswith("https://")
    response.add_cookie(name, value, path="/", httponly=True, samesite="Lax", secure=secure,
                        max_age=max_age)


def catalog_models(request: Request) -> list[dict[str, Any]]:
    """The enabled models, as ``/v1/models`` lists them, by name."""
    registry = request.app.ctx.portal.registry
    return sorted((model_entry(registry, m) for m in registry.models.values() if m.enabled),
                  key=lambda m: m["id"])


async def signed_in(request: Request) -> tuple[KeyRecord | None, HTTPResponse | None]:
    """The session's key, or where to send the visitor instead (the login page).

    Only a manage key signs in; a key turned into an API key since ends its session.
    """
    portal = request.app.ctx.portal
    key = await session_key(portal, request.cookies.get(COOKIE))
    if key is not None and not key.manages:
        await portal.sessions.destroy(request.cookies.get(COOKIE))
        key = None
    if key is None:
        return None, redirect("/login")
    return key, None


async def sign_out(request: Request) -> HTTPResponse:
    await request.app.ctx.portal.sessions.destroy(request.cookies.get(COOKIE))
    response = redirect("/")
    response.delete_cookie(COOKIE, path="/")
    return response


def form_field(request: Request, name: str) -> str:
    """A form field's value, stripped; empty when it is absent or the body is no form."""
    form = request.form
    return ((form.get(name) if form else None) or "").strip()


def form_list(request: Request, name: str) -> list[str]:
    """Every value of a repeated form field (checkboxes), stripped, empty ones dropped."""
    form = request.form
    values = (form.getlist(name) if form else None) or []
    return [v.strip() for v in values if v and v.strip()]


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's ``PORTAL_REAL_IP_HEADER`` when set)."""
    return request.remote_addr or request.ip or "unknown"


def _this_hour(request: Request, bucket: Callable[[str, str, int], str]) -> str:
    store = request.app.ctx.portal.store
    return bucket(store.ns, client_address(request), int(time.time() // 3600))


async def count_this_hour(request: Request, bucket: Callable[[str, str, int], str]) -> int:
    """Count one more of something the client's address did this unix hour, and answer
    how many it did: a Redis counter per address per hour (``bucket``, a function of
    :mod:`edge.store.keys`), gone when the hour is."""
    client = request.app.ctx.portal.store.client
    key = _this_hour(request, bucket)
    count = int(await client.incr(key))
    await client.expire(key, 3600)
    return count


async def counted_this_hour(request: Request, bucket: Callable[[str, str, int], str]) -> int:
    """How many :func:`count_this_hour` counted so far this hour, counting nothing."""
    count = await request.app.ctx.portal.store.client.get(_this_hour(request, bucket))
    return int(count or 0)
