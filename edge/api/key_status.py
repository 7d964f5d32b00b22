"""``GET /v1/key``: the caller's balance, spend and limits (like OpenRouter's)."""

from __future__ import annotations

from sanic import Blueprint, Request, json

from edge.billing.money import format_usd
from edge.db.models import ApiKey
from edge.identity.auth import authenticate

__all__ = ["bp"]

bp = Blueprint("key_status", url_prefix="/v1")


@bp.get("/key")
async def key_status(request: Request):
    portal = request.app.ctx.portal
    key = await authenticate(portal, request.headers.get("authorization"))
    balance = await portal.billing.balance(key.id)
    row = await ApiKey.get(id=key.id)
    return json({"data": {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "balance": format_usd(balance),
        "balance_micros": balance,
        "spent": format_usd(row.spent),
        "spent_micros": row.spent,
        "limits": {"requests_per_minute": key.rpm, "tokens_per_minute": key.tpm},
        "frozen": key.frozen,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }})
