"""The console's payments: the list (by status and account) and one payment's whole
story in time order (its Checkout Session, each Stripe event that names it, its credit,
refunds and disputes with their ledger rows).

The reads are the admin API's: :func:`edge.payments.history.list_payments` as
``GET /admin/payments`` and :func:`edge.payments.history.payment_story` as
``GET /admin/payments/<id>``, the payment found by either of its ids
(:func:`edge.payments.records.find_payment`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sanic import HTTPResponse, Request

from edge.console.common import bp, page_limit, render
from edge.console.records import choice_arg, id_arg, refusing, when
from edge.db.models import PaymentStatus
from edge.errors import NotFound
from edge.payments.history import list_payments, payment_story
from edge.payments.records import find_payment

__all__ = ["payment_page", "payments_page", "timeline"]

#: The statuses a payment may be in, as the filter offers them.
PAYMENT_STATUSES = tuple(str(status) for status in PaymentStatus)
#: What comes first of things that happened at the same moment: the session was opened
#: before anything was paid, a handler wrote its ledger row before its event was recorded.
_ORDER = {"session": 0, "ledger": 1, "event": 2}


@bp.get("/payments")
@refusing
async def payments_page(request: Request) -> HTTPResponse:
    status = choice_arg(request, "status", PAYMENT_STATUSES)
    account = id_arg(request, "account")
    limit = page_limit(request)
    rows = await list_payments(account_id=account, status=status, limit=limit, admin=True)
    for row in rows:
        row["created"], row["updated"] = when(row["created_at"]), when(row["updated_at"])
    return await render(request, "console/payments.html", section="payments", payments=rows,
                        statuses=PAYMENT_STATUSES, chosen=status or "", account=account or "",
                        limit=limit)


@bp.get("/payments/<ref:str>")
@refusing
async def payment_page(request: Request, ref: str) -> HTTPResponse:
    """A payment by its id or its Checkout Session's, as ``GET /admin/payments/<id>``."""
    payment = await find_payment(ref)
    if payment is None:
        raise NotFound(f"No payment '{ref[:80]}'.")
    story = await payment_story(payment)
    return await render(request, "console/payment.html", section="payments", payment=story,
                        timeline=timeline(story), updated=when(story["updated_at"]))


def timeline(story: dict[str, Any]) -> list[dict[str, Any]]:
    """The story's moments, oldest first: the session opened, each ledger row, each event."""
    moments: list[dict[str, Any]] = [{
        "what": "session", "at": story["created_at"], "title": "Checkout session opened",
        "detail": f"{story['amount']} {story['currency'].upper()} asked", "id": story["id"]}]
    for row in story["ledger"]:
        moments.append({"what": "ledger", "at": row["created_at"], "row": row,
                        "title": f"Ledger row: {row['kind']}", "detail": row["note"]})
    for event in story["events"]:
        moments.append({"what": "event", "at": event["received_at"], "title": event["type"],
                        "detail": event["outcome"], "id": event["id"],
                        "matched_by": event["matched_by"]})
    moments.sort(key=lambda moment: (datetime.fromisoformat(moment["at"]),
                                     _ORDER[moment["what"]]))
    for moment in moments:
        moment["when"] = when(moment["at"])
    return moments
