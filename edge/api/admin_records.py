"""``/admin/contact`` and ``/admin/audit``: what visitors wrote and what operators did,
read-only, newest first (bearer ``PORTAL_ADMIN_TOKEN``).

Neither has a route that changes a row: contact messages come in through the contact
page, and the audit log is append-only (:mod:`edge.audit`).
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge.admin import require_admin
from edge.audit import entry_view, recent
from edge.contact import inbox
from edge.errors import InvalidRequest

__all__ = ["bp"]

bp = Blueprint("admin_records", url_prefix="/admin")
bp.on_request(require_admin)


def _limit(request: Request, *, default: int = 100, most: int = 500) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) < 6) or not 1 <= int(raw) <= most:
        raise InvalidRequest(f"'limit' must be from 1 to {most}.", param="limit")
    return int(raw)


def _text(request: Request, name: str, longest: int) -> str | None:
    value = request.args.get(name)
    if value is not None and len(value) > longest:
        raise InvalidRequest(f"'{name}' is at most {longest} characters.", param=name)
    return value or None


@bp.get("/contact")
async def contact_messages(request: Request):
    """Query: ``limit`` (at most 500)."""
    rows = await inbox.recent(_limit(request))
    return json_response({"object": "list", "data": [inbox.message_view(r) for r in rows]})


@bp.get("/audit")
async def audit_log(request: Request):
    """Query: ``target`` (``node:3``), ``action`` (``key.revoke``), ``limit`` (at most 500)."""
    rows = await recent(target=_text(request, "target", 200),
                        action=_text(request, "action", 64), limit=_limit(request))
    return json_response({"object": "list", "data": [entry_view(r) for r in rows]})
