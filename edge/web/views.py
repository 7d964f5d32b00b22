"""The pages: home, get a key, log in, top up, chat, shared conversations, API docs.

The account and its keys are in :mod:`edge.web.keys`, spend and usage in
:mod:`edge.web.activity`, the contact page in :mod:`edge.web.contact`; all share this
blueprint (:mod:`edge.web.common`).
"""

from __future__ import annotations

import re

from sanic import Request, redirect
from sanic.response import json as json_response

from edge.billing.money import format_usd, parse_usd
from edge.db.models import ChatRoom, ChatShare
from edge.errors import APIError, InvalidRequest, NotFound, RateLimited
from edge.identity.accounts import create_key
from edge.identity.auth import check_key, require_manager
from edge.identity.csrf import check_csrf
from edge.identity.sessions import COOKIE, TTL
from edge.store import keys as redis_keys
from edge.web import activity as _activity  # noqa: F401  (its routes are on bp)
from edge.web import contact as _contact  # noqa: F401  (its routes are on bp)
from edge.web import keys as _keys  # noqa: F401  (its routes are on bp)
from edge.web.common import (
    bp,
    catalog_models,
    count_this_hour,
    form_field,
    render,
    set_cookie,
    sign_out,
    signed_in,
)
from edge.web.openapi import openapi_document

__all__ = ["bp", "render"]


@bp.get("/")
async def home(request: Request):
    return await render(request, "home.html", models=catalog_models(request))


@bp.get("/keys/new")
async def signup_form(request: Request):
    return await render(request, "signup.html")


@bp.post("/keys/new")
async def signup(request: Request):
    await check_csrf(request)
    portal = request.app.ctx.portal
    name = form_field(request, "name")
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
    set_cookie(request, response, COOKIE, session.id, max_age=TTL)
    response.headers["cache-control"] = "no-store"
    return response


async def _limit_signups(request: Request) -> None:
    if await count_this_hour(request, redis_keys.signups) > \
            request.app.ctx.portal.settings.signups_per_hour:
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
        key = require_manager(await check_key(portal, form_field(request, "key"),
                                              reading=True))
    except APIError as exc:
        return await render(request, "login.html", status=exc.status, flash=exc.message,
                            flash_kind="error")
    session = await portal.sessions.create(key.id, key.prefix)
    response = redirect("/account")
    set_cookie(request, response, COOKIE, session.id, max_age=TTL)
    return response


@bp.post("/logout")
async def logout(request: Request):
    await check_csrf(request)
    return await sign_out(request)


@bp.get("/topup")
async def topup(request: Request):
    key, away = await signed_in(request)
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
    from edge.chat.protocol import ROOM_NAME

    if not ROOM_NAME.match(room):
        raise InvalidRequest("Room names are 1-64 letters, digits, - and _.")
    return await _chat(request, room)


async def _chat(request: Request, name: str | None):
    """The chat: the account's conversations beside the open one."""
    from edge.chat.conversations import list_conversations, readable

    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    portal = request.app.ctx.portal
    room = await ChatRoom.get_or_none(name=name) if name else None
    if room is not None and not readable(room, key.account_id):
        raise NotFound("No such conversation.")  # as for a name never used
    public = await ChatRoom.filter(private=False).order_by("-id").limit(30)
    return await render(request, "chat.html", key=key, room=name, conversation=room,
                        conversations=await list_conversations(key.account_id),
                        public_rooms=public, purge_days=portal.settings.chat_purge_days,
                        models=[m for m in catalog_models(request) if m["kind"] == "generate"],
                        balance=format_usd(await portal.billing.balance(key.account_id)))


#: What a share link's token may be.
SHARE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@bp.get("/s/<token:str>")
async def shared_conversation(request: Request, token: str):
    """A read-only snapshot anyone with the link may read, until it is revoked."""
    share = await ChatShare.get_or_none(token=token, revoked_at=None).select_related(
        "room") if SHARE_TOKEN.match(token) else None
    if share is None or share.room.deleted_at is not None:
        raise NotFound("This share link does not exist, or its owner revoked it.")
    response = await render(request, "share.html", share=share, snapshot=share.snapshot)
    response.headers.update({"X-Robots-Tag": "noindex, nofollow",
                             "Referrer-Policy": "no-referrer",
                             "Cache-Control": "private, no-store"})
    return response


@bp.get("/docs")
async def docs(request: Request):
    models = [m for m in catalog_models(request) if m["kind"] == "generate"]
    return await render(request, "docs.html",
                        base=request.app.ctx.portal.settings.effective_public_url,
                        example_model=models[0]["id"] if models else "your-model")


@bp.get("/openapi.json")
async def openapi(request: Request):
    return json_response(openapi_document(request.app.ctx.portal.settings.effective_public_url))
