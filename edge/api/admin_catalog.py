"""``/admin/models``: the catalogue for the operator (bearer ``PORTAL_ADMIN_TOKEN``)."""

from __future__ import annotations

from sanic import Blueprint

from edge.admin import require_admin

__all__ = ["bp"]

bp = Blueprint("admin_catalog", url_prefix="/admin")
bp.on_request(require_admin)
