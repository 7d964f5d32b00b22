"""Stripe events as the webhook receives them: verified, parsed and read defensively.

Exception tree::

    PortalError
     └── WebhookRefused        the delivery is refused with 400 and changes nothing
          ├── BadSignature         missing, wrong or stale ``Stripe-Signature``
          └── MalformedEvent       signed, but not an event the portal can read

Fields are read with :func:`text`, :func:`cents` and :func:`object_id`, which
raise :class:`MalformedEvent` rather than ``KeyError`` or ``TypeError``: nothing
a sender puts in a body may turn into a 500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from edge.errors import PortalError
from edge.jsonbody import loads

__all__ = ["BadSignature", "MalformedEvent", "StripeEvent", "WebhookRefused", "cents",
           "object_id", "parse_event", "text", "verify_event"]

#: Seconds a signature's timestamp may be old (Stripe's own default).
SIGNATURE_TOLERANCE = 300


class WebhookRefused(PortalError):
    """A delivery the portal refuses without changing anything."""


class BadSignature(WebhookRefused):
    """The ``Stripe-Signature`` header is missing, wrong, or too old."""


class MalformedEvent(WebhookRefused):
    """A correctly signed body that is not a readable Stripe event."""


@dataclasses.dataclass(frozen=True, slots=True)
class StripeEvent:
    """The parts of a Stripe event the handlers read."""

    id: str
    type: str
    object: Mapping[str, Any]  # data.object: the session, charge or dispute
    livemode: bool


def verify_event(payload: bytes, header: str | None, secret: str, *,
                 tolerance: int = SIGNATURE_TOLERANCE) -> StripeEvent:
    """Check the signature with the official ``stripe`` library, then parse the body.

    Raises:
      BadSignature: no header, no matching ``v1`` signature, or a timestamp older
        than ``tolerance`` seconds.
      MalformedEvent: signed, but not a JSON Stripe event.
    """
    import stripe

    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise BadSignature(str(exc).split(". ")[0]) from None
    return parse_event(payload)


def parse_event(payload: bytes | str) -> StripeEvent:
    """An event from its JSON body.

    Raises:
      MalformedEvent: not JSON, or missing ``id``, ``type`` or ``data.object``.
    """
    try:
        data = loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedEvent("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise MalformedEvent("The body is not a Stripe event.")
    event_id = text(data, "id")
    event_type = text(data, "type")
    body = data.get("data")
    if not isinstance(body, dict) or not isinstance(body.get("object"), dict):
        raise MalformedEvent("The event has no data.object.")
    if len(event_id) > 255 or len(event_type) > 100:
        raise MalformedEvent("The event's id or type is too long.")
    return StripeEvent(event_id, event_type, body["object"], data.get("livemode") is True)


def text(obj: Mapping[str, Any], name: str) -> str:
    """A non-empty string field.

    Raises:
      MalformedEvent: missing or not a string.
    """
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"The event's {name!r} is missing or not a string.")
    return value


def cents(obj: Mapping[str, Any], name: str) -> int:
    """A non-negative integer amount, in the currency's smallest unit.

    Raises:
      MalformedEvent: missing, not an integer, or negative.
    """
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedEvent(f"The event's {name!r} is not an amount.")
    return value


def object_id(obj: Mapping[str, Any], name: str) -> str | None:
    """The id in a field that holds an id, an expanded object, or null."""
    value = obj.get(name)
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None
