"""Stripe top-ups: checkout, the signed webhook, refunds, disputes and payment history.

Money moves only on Stripe's signed word and exactly once per ledger reference
(design invariants 4 and 5); see :mod:`edge.payments.handlers` for the references.

Public API (for the web pages and the CLI):

* :data:`bp`: the routes, registered by :func:`edge.app.create_app`.
* :func:`start_checkout`: open a Checkout Session for a key, from any authenticated path.
* :func:`parse_topup_amount`: a form or JSON amount in USD → micro-dollars, checked.
* :func:`list_payments`: a key's (or every) payment, newest first, as JSON views.
* :class:`PaymentSettings`: whether payments are on, and the bounds.

They load on first use: the start-up check of the payment settings reads
:mod:`edge.payments.config`, which must not pull in the routes and the database
models with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sanic import Blueprint

    from edge.payments.checkout import parse_topup_amount, start_checkout
    from edge.payments.config import PaymentSettings, PaymentsOff
    from edge.payments.history import list_payments, payment_views

    #: Every payments route: ``/api/topup``, ``/api/payments/config``, ``/v1/key/payments``,
    #: ``/webhooks/stripe``, ``/admin/payments`` and ``/admin/payments/events``.
    bp: Blueprint

__all__ = ["PaymentSettings", "PaymentsOff", "bp", "list_payments", "parse_topup_amount",
           "payment_views", "start_checkout"]

_HOMES = {"PaymentSettings": "config", "PaymentsOff": "config", "list_payments": "history",
          "payment_views": "history", "parse_topup_amount": "checkout",
          "start_checkout": "checkout"}


def __getattr__(name: str) -> Any:
    if name == "bp":
        from sanic import Blueprint

        from edge.payments.views import admin_bp, api_bp, webhook_bp

        value: Any = Blueprint.group(api_bp, webhook_bp, admin_bp)
    elif name in _HOMES:
        value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once: every app registers the same group
    return value
