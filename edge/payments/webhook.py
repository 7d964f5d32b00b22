"""``POST /webhooks/stripe`` minus HTTP: one verified event, handled at most once.

An event whose id is in ``webhook_events`` was handled: a new delivery is a
no-op. Deliveries that race past that check (Stripe retries, or sends twice to
two workers) are still safe: each handler changes balances only through unique
ledger references. The event is recorded after its handler succeeded, so a
failed delivery (5xx) is handled again when Stripe retries.
"""

from __future__ import annotations

import logging

from tortoise.exceptions import IntegrityError

from edge.db.models import WebhookEvent
from edge.payments.events import StripeEvent
from edge.payments.handlers import HANDLERS, PaymentsContext

__all__ = ["handle_event"]

log = logging.getLogger(__name__)


async def handle_event(event: StripeEvent, ctx: PaymentsContext) -> tuple[str, bool]:
    """Apply one event; returns ``(outcome, duplicate)``.

    Raises:
      MalformedEvent: a field the handler needs is missing or of the wrong type.
      ServiceUnavailable: Stripe or the ledger is behind; the delivery should be retried.
    """
    seen = await WebhookEvent.get_or_none(id=event.id)
    if seen is not None:
        return seen.outcome, True
    handler = HANDLERS.get(event.type)
    outcome = await handler(event, ctx) if handler else "ignored"
    try:
        await WebhookEvent.create(id=event.id, type=event.type, outcome=outcome[:200])
    except IntegrityError:
        return outcome, True  # a concurrent delivery recorded it first
    if handler:
        log.info("stripe %s %s: %s", event.type, event.id, outcome)
    return outcome, False
