"""Payments as people read them: a key's own history, the operator's list, and one
payment's whole story.

Each payment is shown with what the ledger did about it: ``credited`` (its
top-up) and ``debited`` (refunds and lost disputes taken back, less refunds that
failed and were given back; it may fall short of ``refunded`` when the credit was
already spent). Its story adds the ledger rows themselves, its refunds and disputes
as the ledger recorded them, and the Stripe events that name it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import timedelta
from typing import Any

from tortoise.expressions import Q

from edge.api.shapes import ledger_view, money
from edge.db.models import LedgerEntry, Payment, PaymentStatus, WebhookEvent
from edge.payments.handlers import (
    given_back_reference,
    refund_reference,
    session_of,
    topup_reference,
)

__all__ = ["list_payments", "payment_story", "payment_views"]

#: Ledger reference prefixes that belong to a payment (see :mod:`edge.payments.handlers`).
_PREFIXES = ("checkout:", "refund:", "dispute:", "refund-failed:")
#: Most webhook events a payment's story shows.
STORY_EVENTS = 100


async def list_payments(*, account_id: int | None = None, status: str | None = None,
                        limit: int = 50, admin: bool = False) -> list[dict[str, Any]]:
    """Payments newest first, of one account or of all.

    Parameters:
      account_id: only this account's payments.
      status: only payments in this :class:`PaymentStatus`.
      limit: at most this many (1 to 500).
      admin: also show the account, Stripe's ids of the payment intent and charge.
    """
    query = Payment.all().order_by("-created_at", "-id")
    if account_id is not None:
        query = query.filter(account_id=account_id)
    if status is not None:
        query = query.filter(status=PaymentStatus(status))
    payments = await query.limit(max(1, min(500, limit)))
    return await payment_views(payments, admin=admin)


async def payment_views(payments: list[Payment], *, admin: bool = False) -> list[dict[str, Any]]:
    """JSON views of payments, with what the ledger credited and debited for each."""
    credited: dict[str, int] = defaultdict(int)
    debited: dict[str, int] = defaultdict(int)
    if payments:
        since = min(p.created_at for p in payments) - timedelta(hours=1)
        prefixes = Q(*(Q(reference__startswith=p) for p in _PREFIXES), join_type="OR")
        rows = await LedgerEntry.filter(
            prefixes, account_id__in={p.account_id for p in payments}, created_at__gte=since,
        ).values_list("reference", "amount")
        for reference, amount in rows:
            session_id = session_of(reference)
            if session_id is None:
                continue
            if reference.startswith("checkout:"):
                credited[session_id] += amount
            else:
                debited[session_id] -= amount
    return [_view(p, credited[p.session_id], debited[p.session_id], admin) for p in payments]


def _view(payment: Payment, credited: int, debited: int, admin: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": payment.session_id,
        "status": str(payment.status),
        "currency": payment.currency,
        **money("amount", payment.amount),
        **money("paid", payment.paid),
        **money("refunded", payment.refunded),
        **money("credited", credited),
        **money("debited", debited),
        "created_at": payment.created_at.isoformat(),
        "updated_at": payment.updated_at.isoformat(),
    }
    if payment.status == PaymentStatus.CREATED:
        view["url"] = payment.checkout_url  # an open session can still be paid
    if admin:
        view.update({"payment_id": payment.id, "account_id": payment.account_id,
                     "payment_intent": payment.payment_intent, "charge_id": payment.charge_id})
    return view


def event_view(event: WebhookEvent) -> dict[str, Any]:
    """A Stripe event as the portal recorded it: handled once, with what it did."""
    return {"id": event.id, "type": event.type, "outcome": event.outcome,
            "received_at": event.received_at.isoformat()}


async def payment_story(payment: Payment) -> dict[str, Any]:
    """A payment's whole story, for the operator: the payment (as the admin list shows
    it), the ledger rows it made (its credit, refunds taken back and given back, a lost
    dispute), its refunds and disputes as those rows record them, and the Stripe events
    that name it, newest first.

    An event's ``matched_by`` says how it was found: its outcome names the payment's
    session, one of its refunds or disputes, or only its account (then it may be about
    another payment of that account: a refund's outcome names only the account).
    What a refund collects later from open reservations (``owed:<request id>`` rows)
    names the request, not the payment, and is not here.
    """
    (view,) = await payment_views([payment], admin=True)
    sid = payment.session_id
    refund_prefix = refund_reference(sid, "")
    rows = await LedgerEntry.filter(
        Q(reference=topup_reference(sid)) | Q(reference__startswith=refund_prefix)
        | Q(reference__startswith=given_back_reference(refund_prefix))
        | Q(reference__startswith=f"dispute:{sid}:")).order_by("id")
    refunds: dict[str, dict[str, int]] = {}
    disputes: dict[str, int] = {}
    for row in rows:
        kind, _, rest = row.reference.partition(":")
        other = rest.rpartition(":")[2]  # the refund's or the dispute's id
        if kind in ("refund", "refund-failed"):
            taken = refunds.setdefault(other, {"debited": 0, "given_back": 0})
            taken["debited" if kind == "refund" else "given_back"] += abs(row.amount)
        elif kind == "dispute":
            disputes[other] = disputes.get(other, 0) - row.amount
    return {
        **view,
        "ledger": [ledger_view(row) for row in rows],
        "refunds": [{"id": refund, **money("debited", taken["debited"]),
                     **money("given_back", taken["given_back"])}
                    for refund, taken in refunds.items()],
        "disputes": [{"id": dispute, **money("debited", taken)}
                     for dispute, taken in disputes.items()],
        "events": await _events_naming(payment, refunds=list(refunds),
                                       disputes=list(disputes)),
    }


async def _events_naming(payment: Payment, *, refunds: list[str],
                         disputes: list[str]) -> list[dict[str, Any]]:
    """The webhook events since ``payment`` was made whose outcome names it, one of its
    refunds or disputes, or its account; newest first."""
    account = f"account {payment.account_id}"
    names = [payment.session_id, *refunds, *disputes, account]
    events = await WebhookEvent.filter(
        Q(*(Q(outcome__contains=name) for name in names), join_type="OR"),
        received_at__gte=payment.created_at - timedelta(minutes=1),
    ).order_by("-received_at").limit(STORY_EVENTS)
    of_account = re.compile(rf"\b{re.escape(account)}(?![0-9])")
    story = []
    for event in events:
        said = event.outcome
        if payment.session_id in said:
            matched = "session"
        elif any(refund in said for refund in refunds):
            matched = "refund"
        elif any(dispute in said for dispute in disputes):
            matched = "dispute"
        elif of_account.search(said):
            matched = "account"
        else:
            continue  # "account 3" inside "account 31"
        story.append({**event_view(event), "matched_by": matched})
    return story
