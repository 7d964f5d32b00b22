"""``/admin/ledger``: the ledger's rows for the operator, newest first (bearer
``PORTAL_ADMIN_TOKEN``), as :func:`edge.billing.ledger_search.search_ledger` finds them
(the console's ledger page reads the same).

Read-only: the ledger is append-only, and every row of it came through the settle
script or the one credit function (:func:`edge.billing.credits.credit`). What a
reference looks like tells what made the row: ``usage:<request id>``,
``opening:<prefix>``, ``checkout:<session id>``, ``refund:…``, ``dispute:…``,
``owed:<request id>`` (:mod:`edge.payments.handlers`), or the operator's own.
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge.admin import require_admin
from edge.api.fields import query_id, query_limit, query_text
from edge.api.shapes import ledger_view
from edge.billing.ledger_search import search_ledger
from edge.db.models import LedgerKind
from edge.errors import InvalidRequest

__all__ = ["bp"]

bp = Blueprint("admin_ledger", url_prefix="/admin")
bp.on_request(require_admin)

#: The longest reference a row has (the column's size), in characters.
_REFERENCE_LENGTH = 200


@bp.get("/ledger")
async def ledger(request: Request):
    """Query: ``reference`` (exact) or ``reference_prefix``, ``account`` (an id), ``kind``,
    ``before`` (a row's id: older rows only, the cursor), ``limit`` (at most 500)."""
    reference = query_text(request, "reference", _REFERENCE_LENGTH)
    prefix = query_text(request, "reference_prefix", _REFERENCE_LENGTH)
    if reference is not None and prefix is not None:
        raise InvalidRequest("Give 'reference' or 'reference_prefix', not both.",
                             param="reference_prefix")
    kind = request.args.get("kind")
    kinds = [k.value for k in LedgerKind]
    if kind is not None and kind not in kinds:
        raise InvalidRequest(f"'kind' must be one of {', '.join(kinds)}.", param="kind")
    page = await search_ledger(reference=reference, reference_prefix=prefix,
                               account=query_id(request, "account"),
                               kind=LedgerKind(kind) if kind is not None else None,
                               before=query_id(request, "before"),
                               limit=query_limit(request))
    return json_response({"object": "list", "data": [ledger_view(r) for r in page.rows],
                          "has_more": page.has_more, "next_before": page.next_before})
