"""Payments as people read them: a key's own history and the operator's list.

Each payment is shown with what the ledger did about it: ``credited`` (its
top-up) and ``debited`` (refunds and lost disputes taken back, which may fall
short of ``refunded`` when the credit was already spent).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from tortoise.expressions import Q

from edge.billing.money import format_usd
from edge.db.models import LedgerEntry, Payment, PaymentStatus

__all__ = ["list_payments", "payment_views"]

#: Ledger reference prefixes that belong to a payment (see :mod:`edge.payments.handlers`).
_PREFIXES = ("checkout:", "refund:", "dispute:")


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
            kind, _, rest = reference.partition(":")
            session_id = rest.split(":", 1)[0]
            if kind == "checkout":
                credited[session_id] += amount
            else:
                debited[session_id] -= amount
    return [_view(p, credited[p.session_id], debited[p.session_id], admin) for p in payments]


def _money(name: str, micros: int) -> dict[str, Any]:
    return {name: format_usd(micros), f"{name}_micros": micros}


def _view(payment: Payment, credited: int, debited: int, admin: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": payment.session_id,
        "status": str(payment.status),
        "currency": payment.currency,
        **_money("amount", payment.amount),
        **_money("paid", payment.paid),
        **_money("refunded", payment.refunded),
        **_money("credited", credited),
        **_money("debited", debited),
        "created_at": payment.created_at.isoformat(),
        "updated_at": payment.updated_at.isoformat(),
    }
    if payment.status == PaymentStatus.CREATED:
        view["url"] = payment.checkout_url  # an open session can still be paid
    if admin:
        view.update({"payment_id": payment.id, "account_id": payment.account_id,
                     "payment_intent": payment.payment_intent, "charge_id": payment.charge_id})
    return view
