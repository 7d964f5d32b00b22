"""``GET /v1/key``: the caller's own settings, limits and cap, and its account's balance
(like OpenRouter's ``/api/v1/key``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sanic import Blueprint, Request, json

from edge.api.shapes import key_view, money
from edge.billing.caps import cap_window
from edge.db.models import Account, ApiKey
from edge.identity.auth import authenticate

__all__ = ["bp"]

bp = Blueprint("key_status", url_prefix="/v1")


@bp.get("/key")
async def key_status(request: Request):
    portal = request.app.ctx.portal
    key = await authenticate(portal, request.headers.get("authorization"))
    balance = await portal.billing.balance(key.account_id)
    row = await ApiKey.get(id=key.id)
    account = await Account.get(id=key.account_id)
    view = key_view(row)
    view["prefix"] = key.prefix  # the secret this call used (a rotated-out one, in its grace)
    if row.cap is not None:
        store = portal.store
        window, used = await store.client.hmget(store.cap(row.id), "w", "used")
        current = cap_window(str(row.cap_reset), datetime.now(UTC))
        spent = int(used) if used is not None and window.decode() == current else 0
        view["cap_window"] = {**money("used", spent), **money("left", max(0, row.cap - spent))}
    return json({"data": {
        **view,
        **money("balance", balance),
        "frozen": account.frozen,
        "account": {"id": account.id, "name": account.name, **money("balance", balance),
                    **money("spent", account.spent), "frozen": account.frozen},
    }})

