"""The console's ledger: search by reference (exact, or by its start), account and kind,
newest first, a page at a time (the ``before`` cursor), amounts in USD with what was
taken marked.

The search is :func:`edge.billing.ledger_search.search_ledger`, the rows shown as
``GET /admin/ledger`` shows them (:func:`edge.api.shapes.ledger_view`); its filters are
that route's: ``reference`` or ``reference_prefix``, ``account``, ``kind``, ``before``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sanic import HTTPResponse, Request

from edge.api.fields import query_text
from edge.api.shapes import ledger_view
from edge.billing.ledger_search import search_ledger
from edge.console.common import PATH, bp, page_limit, render
from edge.console.records import choice_arg, id_arg, refusing, when
from edge.db.models import LedgerKind
from edge.errors import InvalidRequest
from edge.payments.handlers import session_of

__all__ = ["ledger_page"]

#: The kinds a row may be of, as the filter offers them.
KINDS = tuple(str(kind) for kind in LedgerKind)
#: The longest reference a row has (the column's size), in characters.
REFERENCE_LENGTH = 200


@bp.get("/ledger")
@refusing
async def ledger_page(request: Request) -> HTTPResponse:
    reference = query_text(request, "reference", REFERENCE_LENGTH)
    prefix = query_text(request, "reference_prefix", REFERENCE_LENGTH)
    if reference is not None and prefix is not None:
        raise InvalidRequest("Give 'reference' or 'reference_prefix', not both.",
                             param="reference_prefix")
    if request.args.get("match") == "prefix" and reference is not None:
        reference, prefix = None, reference  # the page's form: one field, a choice
    account, kind = id_arg(request, "account"), choice_arg(request, "kind", KINDS)
    before, limit = id_arg(request, "before"), page_limit(request)
    page = await search_ledger(reference=reference, reference_prefix=prefix, account=account,
                               kind=LedgerKind(kind) if kind else None, before=before,
                               limit=limit)
    rows = [{**ledger_view(row), "created": when(row.created_at),
             "payment": session_of(row.reference)} for row in page.rows]
    filters: dict[str, Any] = {"reference": reference or prefix or "",
                               "match": "prefix" if prefix else "exact",
                               "account": account or "", "kind": kind or "", "limit": limit}
    kept = {name: value for name, value in filters.items()
            if value and not (name == "match" and value == "exact")}
    older = f"{PATH}/ledger?{urlencode({**kept, 'before': page.next_before})}" \
        if page.next_before else None
    newest = f"{PATH}/ledger?{urlencode(kept)}" if before else None
    return await render(request, "console/ledger.html", section="ledger", rows=rows,
                        kinds=KINDS, older=older, newest=newest, before=before, **filters)
