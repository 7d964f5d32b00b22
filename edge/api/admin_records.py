"""``/admin/contact`` and ``/admin/audit``: what visitors wrote and what operators did,
read-only, newest first (bearer ``PORTAL_ADMIN_TOKEN``).

Neither has a route that changes a row: contact messages come in through the contact
page, and the audit log is append-only (:mod:`edge.audit`).
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge.admin import require_admin
from edge.api.fields import query_limit, query_text
from edge.audit import entry_view, recent
from edge.contact import inbox

__all__ = ["bp"]

bp = Blueprint("admin_records", url_prefix="/admin")
bp.on_request(require_admin)


@bp.get("/contact")
async def contact_messages(request: Request):
    """Query: ``limit`` (at most 500)."""
    rows = await inbox.recent(query_limit(request))
    return json_response({"object": "list", "data": [inbox.message_view(r) for r in rows]})


@bp.get("/audit")
async def audit_log(request: Request):
    """Query: ``target`` (``node:3``), ``action`` (``key.revoke``), ``limit`` (at most 500)."""
    rows = await recent(target=query_text(request, "target", 200),
                        action=query_text(request, "action", 64), limit=query_limit(request))
    return json_response({"object": "list", "data": [entry_view(r) for r in rows]})
