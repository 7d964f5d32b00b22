"""``GET /v1/key``: the caller's own settings, limits and cap, and its account's balance
(like OpenRouter's ``/api/v1/key``)."""

from __future__ import annotations

from sanic import Blueprint, Request, json

from edge.api.shapes import key_view, money
from edge.billing.caps import used_in_window
from edge.db.models import Account, ApiKey
from edge.identity.auth import authenticate, credentials

__all__ = ["bp"]

bp = Blueprint("key_status", url_prefix="/v1")


@bp.get("/key")
async def key_status(request: Request):
    portal = request.app.ctx.portal
    key = await authenticate(portal, credentials(request.headers))
    balance = await portal.billing.balance(key.account_id)
    row = await ApiKey.get(id=key.id)
    account = await Account.get(id=key.account_id)
    view = key_view(row)
    view["prefix"] = key.prefix  # the secret this call used (a rotated-out one, in its grace)
    if row.cap is not None:
        spent = await used_in_window(portal.store, row.id, str(row.cap_reset))
        view["cap_window"] = {**money("used", spent), **money("left", max(0, row.cap - spent))}
    return json({"data": {
        **view,
        **money("balance", balance),
        "frozen": account.frozen,
        "account": {"id": account.id, "name": account.name, **money("balance", balance),
                    **money("spent", account.spent), "frozen": account.frozen},
    }})

