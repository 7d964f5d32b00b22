"""Looking up the payments' records for the operator: one payment by either of its ids,
and the Stripe events received, newest first.

An event is recorded once its handler succeeded (:mod:`edge.payments.webhook`), so its
``received_at`` is also when it was done with; a delivery that failed is not recorded
(Stripe delivers it again, and ``portal_webhooks_total`` counts it).
"""

from __future__ import annotations

from edge.db.models import MAX_ID, Payment, WebhookEvent

__all__ = ["IGNORED", "find_payment", "recent_events"]

#: How the outcome of an event the portal ignored begins (:mod:`edge.payments.webhook`).
IGNORED = "ignored"
#: The longest Checkout Session id (the column's size), in characters.
_SESSION_LENGTH = 255


async def find_payment(ref: str) -> Payment | None:
    """The payment of this id (``payment_id``, digits) or Checkout Session (``cs_…``)."""
    if ref.isascii() and ref.isdigit() and len(ref) < 20:
        return await Payment.get_or_none(id=int(ref)) if 0 < int(ref) <= MAX_ID else None
    if 0 < len(ref) <= _SESSION_LENGTH and ref.isprintable():
        return await Payment.get_or_none(session_id=ref)
    return None


async def recent_events(*, event_type: str | None = None, ignored: bool | None = None,
                        limit: int = 100) -> list[WebhookEvent]:
    """Stripe events newest first.

    Parameters:
      event_type: only events of this type (``charge.refunded``).
      ignored: True, only those the portal ignored; False, only the others.
      limit: at most this many (1 to 500).
    """
    query = WebhookEvent.all().order_by("-received_at")
    if event_type is not None:
        query = query.filter(type=event_type)
    if ignored is True:
        query = query.filter(outcome__startswith=IGNORED)
    elif ignored is False:
        query = query.exclude(outcome__startswith=IGNORED)
    return list(await query.limit(max(1, min(500, limit))))
