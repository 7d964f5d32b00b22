"""What the settings say about payments, and the one Stripe client of a process.

Amounts here are micro-units of the configured currency; what they are in
Stripe's minor units is :mod:`edge.payments.currency`'s business alone.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge.billing.money import format_usd, parse_usd
from edge.errors import ServiceUnavailable
from edge.payments.currency import minor_unit
from edge.settings import ConfigError

if TYPE_CHECKING:
    import stripe

    from edge.settings import Settings

__all__ = [
    "PaymentSettings",
    "PaymentsOff",
    "close_stripe_clients",
    "stripe_client",
]

#: Seconds Stripe may take to answer one call.
STRIPE_TIMEOUT = 20.0
#: Retries of a call that failed on the network or with a 5xx (the library sends
#: an idempotency key, so a retried create makes one session).
STRIPE_RETRIES = 2


class PaymentsOff(ServiceUnavailable):
    """Stripe is not configured on this portal."""

    code = "payments_off"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PaymentSettings:
    """The payment side of :class:`~edge.settings.Settings`, with amounts in micro-dollars."""

    #: Top-ups can be made: a secret key to open sessions and a webhook secret to credit them.
    enabled: bool
    currency: str
    min_amount: int
    max_amount: int
    success_url: str
    cancel_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PaymentSettings:
        """The payment settings, checked: the app factory builds them once at start-up,
        so that a currency or bound Stripe could not charge exactly stops the portal.

        Raises:
          ConfigError: ``PORTAL_CURRENCY`` is not a lower-case ISO code, or a top-up
            bound is not a positive multiple of the finest amount Stripe charges in it,
            or the smallest is above the largest.
        """
        min_amount, max_amount = _topup_bounds(settings)
        base = settings.effective_public_url
        return cls(
            enabled=bool(settings.stripe_secret_key and settings.stripe_webhook_secret),
            currency=settings.currency,
            min_amount=min_amount,
            max_amount=max_amount,
            success_url=settings.topup_success_url
            or f"{base}/account?topup=success&session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=settings.topup_cancel_url or f"{base}/account?topup=cancelled",
        )

    def public(self) -> dict[str, object]:
        """What a page needs to draw the top-up form (no secrets)."""
        return {
            "payments_enabled": self.enabled,
            "currency": self.currency,
            "min_amount": format_usd(self.min_amount),
            "min_amount_micros": self.min_amount,
            "max_amount": format_usd(self.max_amount),
            "max_amount_micros": self.max_amount,
        }


def _topup_bounds(settings: Settings) -> tuple[int, int]:
    """The top-up bounds in micro-units, refused unless Stripe can charge them exactly."""
    currency = settings.currency
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha() \
            or not currency.islower():
        raise ConfigError("PORTAL_CURRENCY must be a lower-case three-letter ISO code, like usd")
    unit = minor_unit(currency)
    bounds = []
    for name in ("topup_min_usd", "topup_max_usd"):
        try:
            micros = parse_usd(getattr(settings, name))
        except ValueError:
            micros = -1
        if micros <= 0 or micros % unit.step_micros:
            raise ConfigError(f"PORTAL_{name.upper()} must be a positive multiple of "
                              f"{unit.step_text}: {unit.rule}")
        bounds.append(micros)
    if bounds[0] > bounds[1]:
        raise ConfigError("PORTAL_TOPUP_MIN_USD is above PORTAL_TOPUP_MAX_USD")
    return bounds[0], bounds[1]


#: One client (and its HTTP pool) per secret key and API base, for this process.
_clients: dict[tuple[str, str], tuple[stripe.StripeClient, stripe.HTTPXClient]] = {}


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """This process's Stripe client for the configured key and API base.

    Raises:
      PaymentsOff: no ``STRIPE_SECRET_KEY``.
    """
    import stripe

    if not settings.stripe_secret_key:
        raise PaymentsOff("Payments are off on this portal: Stripe is not configured.")
    slot = (settings.stripe_secret_key, settings.stripe_api_base)
    made = _clients.get(slot)
    if made is None:
        http = stripe.HTTPXClient(timeout=STRIPE_TIMEOUT)
        client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base
            else None,
            http_client=http,
            max_network_retries=STRIPE_RETRIES,
        )
        made = _clients[slot] = (client, http)
    return made[0]


async def close_stripe_clients() -> None:
    """Close the clients' connection pools (at worker or command shutdown)."""
    made = list(_clients.values())
    _clients.clear()
    for _client, http in made:
        await http.close_async()
