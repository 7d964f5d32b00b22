"""HTTP routes of payments: top-ups, Stripe's webhook, a key's history, the admin list.

``POST /api/topup``            open a Checkout Session (bearer API key)
``GET  /api/payments/config``  whether payments are on, bounds (public, for pages)
``GET  /v1/key/payments``      the caller's payments, newest first (frozen keys too)
``POST /webhooks/stripe``      Stripe's signed events
``GET  /admin/payments``       every payment (bearer ``PORTAL_ADMIN_TOKEN``)
``GET  /admin/payments/events``  Stripe events received and what they did
``GET  /admin/payments/{id}``  one payment's whole story: its ledger rows, refunds,
                               disputes and events
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge import metrics
from edge.admin import require_admin
from edge.api.fields import query_id, query_limit, query_text
from edge.db.models import PaymentStatus
from edge.errors import InvalidRequest, NotFound
from edge.identity.auth import authenticate, credentials, require_usable
from edge.identity.keys import KeyRecord
from edge.jsonbody import json_object
from edge.payments.checkout import parse_topup_amount, start_checkout
from edge.payments.config import PaymentSettings, PaymentsOff, close_stripe_clients
from edge.payments.events import WebhookRefused, verify_event
from edge.payments.history import event_view, list_payments, payment_story, payment_views
from edge.payments.records import find_payment, recent_events
from edge.payments.webhook import handle_event

__all__ = ["admin_bp", "api_bp", "webhook_bp"]

api_bp = Blueprint("payments_api")
webhook_bp = Blueprint("payments_webhook")
admin_bp = Blueprint("payments_admin", url_prefix="/admin")


@api_bp.get("/api/payments/config")
async def payments_config(request: Request):
    return json_response(PaymentSettings.from_settings(request.app.ctx.portal.settings).public())


@api_bp.post("/api/topup")
async def topup(request: Request):
    """Body ``{"amount": "25.00"}`` (USD); answers the payment with Stripe's ``url``."""
    portal = request.app.ctx.portal
    payments = PaymentSettings.from_settings(portal.settings)
    if not payments.enabled:
        raise PaymentsOff("Payments are off on this portal: Stripe is not configured.")
    key = await _payer(request)
    amount = parse_topup_amount(json_object(request.body, empty_ok=True).get("amount"), payments)
    payment = await start_checkout(portal, key, amount)
    (view,) = await payment_views([payment])
    return json_response({**view, "url": payment.checkout_url})


async def _payer(request: Request) -> KeyRecord:
    """A bearer key, or the signed-in browser's key (then the form's CSRF token is due)."""
    portal = request.app.ctx.portal
    if credentials(request.headers):
        return await authenticate(portal, credentials(request.headers))
    from edge.identity.csrf import check_csrf
    from edge.identity.sessions import COOKIE, session_key

    key = await session_key(portal, request.cookies.get(COOKIE))
    if key is None:
        return await authenticate(portal, None)  # raises: no key at all
    await check_csrf(request)
    return require_usable(key)  # the session lets a frozen key read, not pay


@api_bp.get("/v1/key/payments")
async def key_payments(request: Request):
    """The caller's payments; a key frozen by a dispute may still read them."""
    key = await _authenticate_even_frozen(request)
    data = await list_payments(account_id=key.account_id,
                               limit=query_limit(request, default=50, most=100))
    return json_response({"object": "list", "data": data})


@webhook_bp.post("/webhooks/stripe")
async def stripe_webhook(request: Request):
    """200 once the event's effect is durable; 400 changes nothing; 5xx: Stripe retries."""
    portal = request.app.ctx.portal
    secret = portal.settings.stripe_webhook_secret
    if not secret:
        raise PaymentsOff("Payments are off on this portal: STRIPE_WEBHOOK_SECRET is not set.")
    try:
        event = verify_event(request.body, request.headers.get("stripe-signature"), secret)
        outcome, duplicate = await handle_event(event, portal)
    except WebhookRefused as exc:
        metrics.WEBHOOKS.labels("stripe", "refused").inc()
        raise InvalidRequest(f"Webhook refused: {exc}", code="webhook_refused") from None
    except BaseException:  # a 5xx (or a cancelled request): Stripe delivers it again
        metrics.WEBHOOKS.labels("stripe", "failed").inc()
        raise
    metrics.WEBHOOKS.labels("stripe", "duplicate" if duplicate else "handled").inc()
    return json_response({"received": True, "id": event.id, "type": event.type,
                          "duplicate": duplicate, "outcome": outcome})


admin_bp.on_request(require_admin)


@admin_bp.get("/payments")
async def admin_payments(request: Request):
    """Query: ``status``, ``account_id``, ``limit`` (at most 500)."""
    status = request.args.get("status")
    statuses = [s.value for s in PaymentStatus]
    if status is not None and status not in statuses:
        raise InvalidRequest(f"'status' must be one of {', '.join(statuses)}.", param="status")
    data = await list_payments(account_id=query_id(request, "account_id"), status=status,
                               limit=query_limit(request), admin=True)
    return json_response({"object": "list", "data": data})


@admin_bp.get("/payments/events")
async def admin_payment_events(request: Request):
    """Query: ``type`` (``charge.refunded``), ``ignored`` (true: only events the portal
    ignored, false: only the others), ``limit`` (at most 500). A delivery that failed
    is not recorded: Stripe delivers it again (``portal_webhooks_total`` counts it)."""
    ignored = request.args.get("ignored")
    if ignored is not None and ignored not in ("true", "false"):
        raise InvalidRequest("'ignored' is true or false.", param="ignored")
    events = await recent_events(event_type=query_text(request, "type", 100),
                                 ignored=None if ignored is None else ignored == "true",
                                 limit=query_limit(request))
    return json_response({"object": "list", "data": [event_view(e) for e in events]})


@admin_bp.get("/payments/<payment:str>")
async def admin_payment(request: Request, payment: str):
    """A payment by its id (``payment_id``) or its Checkout Session's (``cs_…``)."""
    found = await find_payment(payment)
    if found is None:
        raise NotFound(f"No payment '{payment[:80]}'.")
    return json_response(await payment_story(found))


@api_bp.after_server_stop
async def _close_clients(app) -> None:
    await close_stripe_clients()


async def _authenticate_even_frozen(request: Request) -> KeyRecord:
    """A frozen key may read its payments (to see the dispute), nothing else."""
    return await authenticate(request.app.ctx.portal, credentials(request.headers),
                              reading=True)
