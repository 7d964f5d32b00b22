"""The pages: home, get a key, log in, account, top up, chat, API docs."""

from __future__ import annotations

import time
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sanic import Blueprint, HTTPResponse, Request, html, redirect
from sanic.response import json as json_response

from edge.api.catalog import model_entry
from edge.billing.money import format_usd, parse_usd
from edge.db.models import ApiKey, ChatRoom, UsageRecord
from edge.errors import APIError, InvalidRequest, RateLimited
from edge.identity.accounts import create_key, revoke_key
from edge.identity.auth import check_key, require_manager
from edge.identity.csrf import check_csrf, form_token
from edge.identity.sessions import COOKIE, CSRF_COOKIE, TTL, session_key
from edge.store import keys as redis_keys
from edge.web.openapi import openapi_document

__all__ = ["bp", "render"]

bp = Blueprint("web")

_templates = Environment(loader=PackageLoader("edge", "templates"),
                         autoescape=select_autoescape(("html",)), enable_async=False)


async def render(request: Request, template: str, *, status: int = 200,
                 **context: Any) -> HTTPResponse:
    """A page, with what every page needs (the signed-in key, a CSRF token)."""
    portal = request.app.ctx.portal
    if "key" not in context:
        context["key"] = await session_key(portal, request.cookies.get(COOKIE))
    context["csrf"] = await form_token(request)
    response = html(_templates.get_template(template).render(**context), status=status)
    token = getattr(request.ctx, "new_csrf_cookie", None)
    if token:
        _cookie(request, response, CSRF_COOKIE, token, max_age=TTL)
    return response


def _cookie(request: Request, response: HTTPResponse, name: str, value: str,
            max_age: int) -> None:
    secure = request.app.ctx.portal.settings.effective_public_url.startswith("https://")
    response.add_cookie(name, value, path="/", httponly=True, samesite="Lax", secure=secure,
                        max_age=max_age)


def _models(request: Request) -> list[dict[str, Any]]:
    registry = request.app.ctx.portal.registry
    return sorted((model_entry(registry, m) for m in registry.models.values() if m.enabled),
                  key=lambda m: m["id"])


async def _signed_in(request: Request):
    key = await session_key(request.app.ctx.portal, request.cookies.get(COOKIE))
    if key is None:
        return None, redirect("/login")
    return key, None


@bp.get("/")
async def home(request: Request):
    return await render(request, "home.html", models=_models(request))


@bp.get("/keys/new")
async def signup_form(request: Request):
    return await render(request, "signup.html")


@bp.post("/keys/new")
async def signup(request: Request):
    await check_csrf(request)
    portal = request.app.ctx.portal
    name = _form_field(request, "name")
    if not 1 <= len(name) <= 48:
        return await render(request, "signup.html", status=400, name=name,
                            flash="Give a name of 1 to 48 characters.", flash_kind="error")
    await _limit_signups(request)
    settings = portal.settings
    created = await create_key(name=name, pepper=portal.pepper,
                               credit=parse_usd(settings.signup_credit), rpm=settings.default_rpm,
                               tpm=settings.default_tpm, store=portal.store)
    session = await portal.sessions.create(created.row.id, created.row.prefix)
    request.ctx.session = session
    record = await portal.keys.lookup(created.row.prefix)
    response = await render(request, "key_created.html", key=record, secret=created.secret,
                            balance=format_usd(created.account.balance))
    _cookie(request, response, COOKIE, session.id, max_age=TTL)
    response.headers["cache-control"] = "no-store"
    return response


def _form_field(request: Request, name: str) -> str:
    """A form field's value, stripped; empty when it is absent or the body is no form."""
    form = request.form
    return ((form.get(name) if form else None) or "").strip()


async def _limit_signups(request: Request) -> None:
    portal = request.app.ctx.portal
    address = request.remote_addr or request.ip or "unknown"
    bucket = redis_keys.signups(portal.store.ns, address, int(time.time() // 3600))
    count = await portal.store.client.incr(bucket)
    await portal.store.client.expire(bucket, 3600)
    if count > portal.settings.signups_per_hour:
        raise RateLimited("Too many keys made from this address; try again in an hour.",
                          retry_after=3600)


@bp.get("/login")
async def login_form(request: Request):
    return await render(request, "login.html")


@bp.post("/login")
async def login(request: Request):
    await check_csrf(request)
    portal = request.app.ctx.portal
    try:
        # reading: a frozen key may sign in to see its account (and why it is frozen).
        key = require_manager(await check_key(portal, _form_field(request, "key"),
                                              reading=True))
    except APIError as exc:
        return await render(request, "login.html", status=exc.status, flash=exc.message,
                            flash_kind="error")
    session = await portal.sessions.create(key.id, key.prefix)
    response = redirect("/account")
    _cookie(request, response, COOKIE, session.id, max_age=TTL)
    return response


async def _sign_out(request: Request) -> HTTPResponse:
    await request.app.ctx.portal.sessions.destroy(request.cookies.get(COOKIE))
    response = redirect("/")
    response.delete_cookie(COOKIE, path="/")
    return response


@bp.post("/logout")
async def logout(request: Request):
    await check_csrf(request)
    return await _sign_out(request)


@bp.get("/account")
async def account(request: Request):
    key, away = await _signed_in(request)
    if away:
        return away
    portal = request.app.ctx.portal
    row = await ApiKey.get(id=key.id)
    usage = [{"when": u.created_at.strftime("%Y-%m-%d %H:%M"), "model": u.model,
              "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
              "cost": format_usd(u.cost), "status": u.status}
             for u in await UsageRecord.filter(key_id=key.id).order_by("-id").limit(20)]
    from edge.payments.history import list_payments

    payments = [{"when": p["created_at"][:16].replace("T", " "), "amount": p["amount"],
                 "status": p["status"]}
                for p in await list_payments(account_id=key.account_id, limit=20)]
    return await render(request, "account.html", key=key,
                        balance=format_usd(await portal.billing.balance(key.account_id)),
                        spent=format_usd(row.spent), usage=usage, payments=payments,
                        flash=_topup_flash(request))


def _topup_flash(request: Request) -> str | None:
    outcome = request.args.get("topup")
    if outcome == "success":
        return "Thank you! Your credit appears as soon as Stripe confirms the payment."
    if outcome == "cancelled":
        return "The payment was cancelled; nothing was charged."
    return None


@bp.post("/account/revoke")
async def revoke(request: Request):
    await check_csrf(request)
    key, away = await _signed_in(request)
    if away:
        return away
    await revoke_key(await ApiKey.get(id=key.id), store=request.app.ctx.portal.store)
    return await _sign_out(request)


@bp.get("/topup")
async def topup(request: Request):
    key, away = await _signed_in(request)
    if away:
        return away
    from edge.payments.config import PaymentSettings

    payments = PaymentSettings.from_settings(request.app.ctx.portal.settings)
    minimum = format_usd(payments.min_amount)
    return await render(request, "topup.html", key=key, payments_enabled=payments.enabled,
                        minimum=minimum, maximum=format_usd(payments.max_amount),
                        default=max(10, float(minimum)))


@bp.get("/chat")
async def chat_lobby(request: Request):
    return await _chat(request, None)


@bp.get("/chat/<room:str>")
async def chat_room(request: Request, room: str):
    from edge.chat.views import ROOM_NAME

    if not ROOM_NAME.match(room):
        raise InvalidRequest("Room names are 1-64 letters, digits, - and _.")
    return await _chat(request, room)


async def _chat(request: Request, room: str | None):
    key, away = await _signed_in(request)
    if away:
        return away
    portal = request.app.ctx.portal
    public = await ChatRoom.filter(private=False).order_by("-id").limit(30)
    own = await ChatRoom.filter(private=True, created_by_id=key.id).order_by("-id").limit(20)
    return await render(request, "chat.html", key=key, room=room, rooms=[*own, *public],
                        models=_models(request),
                        balance=format_usd(await portal.billing.balance(key.account_id)))


@bp.get("/docs")
async def docs(request: Request):
    models = _models(request)
    return await render(request, "docs.html",
                        base=request.app.ctx.portal.settings.effective_public_url,
                        example_model=models[0]["id"] if models else "your-model")


@bp.get("/openapi.json")
async def openapi(request: Request):
    return json_response(openapi_document(request.app.ctx.portal.settings.effective_public_url))
