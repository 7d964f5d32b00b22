"""Opening a top-up: a Stripe Checkout Session for an amount of credit on one key.

The amount asked here only opens the session. What is credited later is what
Stripe's signed webhook says was paid (:mod:`edge.payments.handlers`).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from edge.billing.money import format_usd, parse_usd
from edge.db.models import Payment, PaymentStatus
from edge.errors import InvalidRequest, ServiceUnavailable
from edge.identity.auth import require_manager, require_usable
from edge.payments.config import PaymentSettings, PaymentsOff, stripe_client
from edge.payments.currency import minor_unit, to_minor

if TYPE_CHECKING:
    from edge.context import PortalContext
    from edge.identity.keys import KeyRecord

__all__ = ["check_topup_amount", "parse_topup_amount", "start_checkout"]

log = logging.getLogger(__name__)

#: Longest checkout URL the payments table keeps (characters).
URL_COLUMN = 1000
#: Name of the line item payers see on Stripe's page.
PRODUCT_NAME = "Inference Portal credit"


def parse_topup_amount(value: object, payments: PaymentSettings) -> int:
    """An amount of USD from a request (``"25"``, ``"12.50"`` or a JSON number) in micro-dollars.

    Raises:
      InvalidRequest: not an amount, finer than Stripe charges, or outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) \
            or len(str(value)) > 32:
        raise InvalidRequest('\'amount\' must be an amount of USD, like "25" or "12.50".',
                             param="amount")
    try:
        micros = parse_usd(value)
    except ValueError:
        raise InvalidRequest('\'amount\' must be an amount of USD, like "25" or "12.50".',
                             param="amount") from None
    check_topup_amount(micros, payments)
    return micros


def check_topup_amount(micros: int, payments: PaymentSettings) -> None:
    """Refuse amounts outside the bounds or finer than Stripe charges in the currency.

    Raises:
      InvalidRequest: with ``param="amount"``.
    """
    if not payments.min_amount <= micros <= payments.max_amount:
        raise InvalidRequest(
            f"A top-up must be from ${format_usd(payments.min_amount)} to "
            f"${format_usd(payments.max_amount)}.", param="amount")
    unit = minor_unit(payments.currency)
    if micros % unit.step_micros:
        raise InvalidRequest(f"A top-up must be a multiple of {unit.step_text} ({unit.rule}).",
                             param="amount")


async def start_checkout(portal: PortalContext, key: KeyRecord, amount: int) -> Payment:
    """Open a Stripe Checkout Session for ``amount`` micro-dollars of credit on ``key``.

    The caller sends the payer to ``payment.checkout_url``. Used by ``POST /api/topup``
    (API key) and by the web pages (session).

    Parameters:
      portal: the worker's context (settings).
      key: the key to credit, a ``KeyRecord``; it must pass the usable-key rule.
      amount: micro-units, a multiple of what Stripe charges, within the bounds.

    Raises:
      PaymentsOff: Stripe is not configured (503).
      PermissionDenied: the key is frozen by a payment dispute (403).
      InvalidAPIKey: the key was revoked or expired meanwhile (401).
      InvalidRequest: the amount is out of bounds or finer than Stripe charges (400).
      ServiceUnavailable: Stripe did not answer or refused the call (503).

    Returns:
      The new :class:`Payment`, status ``created``.
    """
    settings = portal.settings
    payments = PaymentSettings.from_settings(settings)
    if not payments.enabled:
        raise PaymentsOff("Payments are off on this portal: Stripe is not configured.")
    require_manager(require_usable(key))
    check_topup_amount(amount, payments)
    session = await _create_session(settings, payments, key, amount)
    url = session.get("url") or ""
    payment = await Payment.create(
        account_id=key.account_id, session_id=session["id"], amount=amount,
        currency=payments.currency,
        status=PaymentStatus.CREATED, checkout_url=url if len(url) <= URL_COLUMN else "",
        payment_intent=session.get("payment_intent") or None)
    payment.checkout_url = url  # in full, even if too long to keep
    log.info("top-up opened: account %s (key %s), %s %s, session %s", key.account_id, key.id,
             format_usd(amount),
             payments.currency, payment.session_id)
    return payment


async def _create_session(settings, payments: PaymentSettings, key: KeyRecord,
                          amount: int) -> dict:
    import stripe

    client = stripe_client(settings)
    metadata = {"account_id": str(key.account_id), "key_id": str(key.id),
                "key_prefix": key.prefix, "amount_micros": str(amount)}
    params = {
        "mode": "payment",
        "line_items": [{
            "quantity": 1,
            "price_data": {
                "currency": payments.currency,
                "unit_amount": to_minor(amount, payments.currency),
                "product_data": {"name": PRODUCT_NAME,
                                 "description": f"Credit for account {key.account_id}"},
            },
        }],
        "client_reference_id": str(key.account_id),
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "success_url": payments.success_url,
        "cancel_url": payments.cancel_url,
    }
    try:
        session = await client.v1.checkout.sessions.create_async(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": f"portal-topup-{key.account_id}-{uuid.uuid4().hex}"})
    except stripe.InvalidRequestError as exc:
        log.error("Stripe refused a checkout session for key %s: %s", key.id, exc.user_message)
        raise InvalidRequest(f"Stripe refused the top-up: {exc.user_message or 'invalid'}",
                             param="amount") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        log.error("Stripe refused the portal's secret key: %s", exc.user_message)
        raise ServiceUnavailable("Payments are misconfigured on this portal; try again later.",
                                 code="payments_unavailable") from exc
    except stripe.StripeError as exc:
        log.warning("Stripe did not open a checkout session: %r", exc)
        raise ServiceUnavailable("Stripe did not answer; try the top-up again shortly.",
                                 code="payments_unavailable", retry_after=5) from exc
    data = session.to_dict()
    if not isinstance(data.get("id"), str):
        raise ServiceUnavailable("Stripe answered without a session; try again shortly.",
                                 code="payments_unavailable", retry_after=5)
    return data
