"""What each Stripe event does to balances, payments and keys; every handler is idempotent.

Ledger references (unique, so each change applies once however often and however
concurrently an event is delivered)::

    checkout:<session id>                 the top-up of a paid Checkout Session
    refund:<session id>:<refund id>       one refund, taken back from the balance
    refund-failed:refund:<…>:<…>          that refund failed: its debit given back
    dispute:<session id>:<dispute id>     a dispute lost, taken back from the balance
    owed:<request id>                     the rest of a refund or lost dispute, collected
                                          from what a reservation released when it settled

A debit never takes a balance below zero: the credit script takes what there is
now, defers what the key's open reservations hold to when they settle (they pay
it from what they release), and the ledger row's note records what was asked.
The shortfall is what neither covers: credit already spent. Each handler returns
a one-line outcome, kept with the event in ``webhook_events``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from edge.billing.credits import Credited, CreditNotDurable, credit
from edge.billing.money import format_usd
from edge.db.models import LedgerEntry, LedgerKind, Payment, PaymentStatus
from edge.errors import ServiceUnavailable
from edge.identity.accounts import set_frozen
from edge.payments.config import stripe_client
from edge.payments.currency import to_micros
from edge.payments.events import StripeEvent, cents, object_id, text

if TYPE_CHECKING:
    from edge.settings import Settings
    from edge.store.hotstore import HotStore

__all__ = ["HANDLERS", "REFUNDING", "PaymentsContext", "credit_session",
           "give_back_refund", "given_back_reference", "record_refunded", "refund_reference",
           "session_of", "take_back_refund", "topup_reference"]

log = logging.getLogger(__name__)

#: Statuses a paid session may move a payment out of.
_UNPAID = (PaymentStatus.CREATED, PaymentStatus.FAILED, PaymentStatus.EXPIRED)
#: Refund statuses that return money to the payer (pending ones almost always do).
REFUNDING = ("succeeded", "pending", "requires_action")
#: Closed disputes the merchant kept the money of.
_DISPUTE_WON = ("won", "warning_closed")


class PaymentsContext(Protocol):
    """What handlers need: a worker's ``PortalContext`` or a command's context."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> HotStore | None: ...


def topup_reference(session_id: str) -> str:
    return f"checkout:{session_id}"


async def _credit(account_id: int, amount: int, *, reference: str, kind: LedgerKind,
                       note: str, store: HotStore | None) -> Credited:
    """:func:`edge.billing.credits.credit`, answering Stripe 503 when SQL is behind.

    Raises:
      ServiceUnavailable: the change did not reach SQL in time (Stripe delivers
        again; the reference applies once).
    """
    try:
        return await credit(account_id, amount, kind=kind, reference=reference, note=note,
                            store=store)
    except CreditNotDurable:
        log.error("%s did not reach the ledger in time; Stripe will deliver again", reference)
        raise ServiceUnavailable("The ledger is behind; deliver the event again.",
                                 retry_after=10) from None


async def credit_session(session: Mapping[str, Any], ctx: PaymentsContext) -> str:
    """Credit a paid Checkout Session to its key, once; what Stripe says was paid.

    Shared by the webhook and ``portal payments reconcile --apply``.
    """
    session_id = text(session, "id")
    payment = await Payment.get_or_none(session_id=session_id)
    if payment is None:
        log.warning("Stripe session %s is not a portal top-up; ignored", session_id)
        return f"ignored: {session_id} is not a portal top-up"
    if session.get("payment_status") != "paid":
        return f"not paid yet ({str(session.get('payment_status'))[:20]})"
    currency = str(session.get("currency") or "").lower()
    if currency != payment.currency:
        log.error("session %s was paid in %r, the top-up was in %r; not credited",
                  session_id, currency, payment.currency)
        return f"ignored: paid in {currency[:8]!r}, not {payment.currency}"
    reference_key = session.get("client_reference_id")
    if reference_key is not None and reference_key != str(payment.account_id):
        log.error("session %s names account %r, its payment's is %s; not credited", session_id,
                  reference_key, payment.account_id)
        return "ignored: the session names another account"
    amount = to_micros(cents(session, "amount_total"), payment.currency)
    if amount == 0:
        return "nothing was paid"
    if amount != payment.amount:
        log.warning("session %s: paid %s, asked %s; crediting what was paid", session_id,
                    format_usd(amount), format_usd(payment.amount))
    duplicate = (await _credit(
        payment.account_id, amount, reference=topup_reference(session_id), kind=LedgerKind.TOPUP,
        note=f"Stripe checkout {session_id}", store=ctx.store)).duplicate
    changes: dict[str, Any] = {"paid": amount, "updated_at": datetime.now(UTC)}
    if intent := object_id(session, "payment_intent"):
        changes["payment_intent"] = intent
    moved = await Payment.filter(id=payment.id, status__in=_UNPAID).update(
        status=PaymentStatus.PAID, **changes)
    if not moved:  # refunded or disputed already (events out of order): keep that status
        await Payment.filter(id=payment.id, paid=0).update(**changes)
    if duplicate:
        return f"already credited ({session_id})"
    return f"credited {format_usd(amount)} to account {payment.account_id}"


async def on_session_completed(event: StripeEvent, ctx: PaymentsContext) -> str:
    return await credit_session(event.object, ctx)


async def on_session_async_failed(event: StripeEvent, ctx: PaymentsContext) -> str:
    return await _close_unpaid(event.object, PaymentStatus.FAILED)


async def on_session_expired(event: StripeEvent, ctx: PaymentsContext) -> str:
    return await _close_unpaid(event.object, PaymentStatus.EXPIRED)


async def _close_unpaid(session: Mapping[str, Any], status: PaymentStatus) -> str:
    session_id = text(session, "id")
    changed = await Payment.filter(session_id=session_id, status=PaymentStatus.CREATED).update(
        status=status, updated_at=datetime.now(UTC))
    return f"{session_id} {status}" if changed else f"{session_id} unchanged"


async def _payment_for_charge(charge_id: str | None, intent: str | None,
                              ctx: PaymentsContext) -> Payment | None:
    """The top-up a charge paid for, credited first if its completion has not come yet.

    Stripe does not promise the order of events: a refund or a dispute may arrive
    before ``checkout.session.completed``, when the payment does not know its
    payment intent yet. Stripe is asked which session the intent belongs to, and
    that session is credited now (once, by its reference), so that the refund
    takes back a credit that exists.
    """
    payment = None
    if intent:
        payment = await Payment.get_or_none(payment_intent=intent)
    if payment is None and charge_id:
        payment = await Payment.filter(charge_id=charge_id).first()
    if payment is None and intent:
        session = await _session_of_intent(intent, ctx.settings)
        if session is not None:
            payment = await Payment.get_or_none(session_id=text(session, "id"))
            if payment is not None:
                await credit_session(session, ctx)
                await payment.refresh_from_db()
    return payment


async def _session_of_intent(intent: str, settings: Settings) -> Mapping[str, Any] | None:
    import stripe

    try:
        page = await stripe_client(settings).v1.checkout.sessions.list_async(
            params={"payment_intent": intent, "limit": 1})
    except stripe.StripeError as exc:
        log.warning("could not find the session of %s: %r", intent, exc)
        raise ServiceUnavailable("Stripe did not answer; deliver again.",
                                 retry_after=30) from None
    sessions = [session.to_dict() for session in page.data]
    return sessions[0] if sessions else None


async def on_charge_refunded(event: StripeEvent, ctx: PaymentsContext) -> str:
    """Take each new refund of a top-up back from its key, never below zero.

    What open reservations hold is taken when they settle, from what they release.
    """
    charge = event.object
    charge_id = text(charge, "id")
    payment = await _payment_for_charge(charge_id, object_id(charge, "payment_intent"), ctx)
    if payment is None:
        return f"ignored: charge {charge_id} is not a portal top-up"
    sid = payment.session_id
    asked = debited = deferred = 0
    for refund in await _refunds(charge, charge_id, ctx.settings):
        if not isinstance(refund, dict) or refund.get("status") not in REFUNDING:
            continue
        amount = to_micros(cents(refund, "amount"), payment.currency)
        taken = await take_back_refund(payment, refund, ctx)
        if taken is None:
            return f"refund of {sid} not taken back: it was never credited"
        if not taken.duplicate:
            asked += amount
            debited -= taken.applied
            deferred += taken.deferred
    await Payment.filter(id=payment.id, charge_id__isnull=True).update(charge_id=charge_id)
    await record_refunded(payment, to_micros(cents(charge, "amount_refunded"), payment.currency),
                          full=charge.get("refunded") is True)
    if not asked:
        return f"refunds of {sid} already taken back"
    shortfall = asked - debited - deferred
    if debited < asked:
        log.warning("refund of %s on key %s: the balance covered %s of %s now, %s to collect "
                    "from open reservations (shortfall %s)", sid, payment.account_id,
                    format_usd(debited), format_usd(asked), format_usd(deferred),
                    format_usd(shortfall))
    return (f"refunded {format_usd(asked)} of account {payment.account_id}: debited "
            f"{format_usd(debited)} now, {format_usd(deferred)} to collect from open "
            f"reservations, shortfall {format_usd(shortfall)}")


async def _refunds(charge: Mapping[str, Any], charge_id: str,
                   settings: Settings) -> list[object]:
    """The charge's refunds: from the event when it lists them all (each checked by the
    caller), else from Stripe."""
    listed = charge.get("refunds")
    if isinstance(listed, dict) and isinstance(listed.get("data"), list) \
            and not listed.get("has_more"):
        refunds: list[object] = listed["data"]
        return refunds
    import stripe

    try:
        page = await stripe_client(settings).v1.refunds.list_async(
            params={"charge": charge_id, "limit": 100})
        return [refund.to_dict() async for refund in page.auto_paging_iter()]
    except stripe.StripeError as exc:
        log.warning("could not list the refunds of %s: %r", charge_id, exc)
        raise ServiceUnavailable("Stripe did not list the refunds; deliver again.",
                                 retry_after=30) from None


async def on_dispute_created(event: StripeEvent, ctx: PaymentsContext) -> str:
    """Freeze the key while the bank decides: its credit may be taken back."""
    dispute = event.object
    dispute_id = text(dispute, "id")
    payment = await _payment_for_charge(object_id(dispute, "charge"),
                                        object_id(dispute, "payment_intent"), ctx)
    if payment is None:
        return f"ignored: dispute {dispute_id} is not about a portal top-up"
    await Payment.filter(id=payment.id).update(status=PaymentStatus.DISPUTED,
                                               updated_at=datetime.now(UTC))
    await set_frozen(payment.account_id, True, ctx.store)
    log.warning("dispute %s on %s: key %s frozen", dispute_id, payment.session_id,
                payment.account_id)
    return f"account {payment.account_id} frozen by dispute {dispute_id}"


async def on_dispute_closed(event: StripeEvent, ctx: PaymentsContext) -> str:
    """Won: unfreeze (unless another dispute is open). Lost: take the amount back."""
    dispute = event.object
    dispute_id = text(dispute, "id")
    outcome = text(dispute, "status")
    payment = await _payment_for_charge(object_id(dispute, "charge"),
                                        object_id(dispute, "payment_intent"), ctx)
    if payment is None:
        return f"ignored: dispute {dispute_id} is not about a portal top-up"
    if outcome in _DISPUTE_WON:
        await payment.refresh_from_db()
        status = PaymentStatus.PAID
        if payment.refunded:
            status = PaymentStatus.REFUNDED if payment.refunded >= payment.paid \
                else PaymentStatus.PARTIALLY_REFUNDED
        await Payment.filter(id=payment.id, status=PaymentStatus.DISPUTED).update(
            status=status, updated_at=datetime.now(UTC))
        if await Payment.exists(account_id=payment.account_id, status=PaymentStatus.DISPUTED):
            return f"dispute {dispute_id} {outcome}; account {payment.account_id} stays frozen " \
                   "(another dispute is open)"
        await set_frozen(payment.account_id, False, ctx.store)
        return f"dispute {dispute_id} {outcome}; account {payment.account_id} unfrozen"
    if outcome == "lost":
        amount = to_micros(cents(dispute, "amount"), payment.currency)
        taken = await _credit(
            payment.account_id, -amount, reference=f"dispute:{payment.session_id}:{dispute_id}",
            kind=LedgerKind.REFUND, note=f"Stripe dispute {dispute_id} lost",
            store=ctx.store)
        if taken.duplicate:
            return (f"dispute {dispute_id} lost; account {payment.account_id} stays frozen "
                    f"({format_usd(amount)} taken back already)")
        debited = -taken.applied
        shortfall = amount - debited - taken.deferred
        log.warning("dispute %s lost: key %s debited %s of %s now, %s to collect from open "
                    "reservations (shortfall %s); it stays frozen", dispute_id, payment.account_id,
                    format_usd(debited), format_usd(amount), format_usd(taken.deferred),
                    format_usd(shortfall))
        return (f"dispute {dispute_id} lost; account {payment.account_id} debited "
                f"{format_usd(debited)} of {format_usd(amount)} now, "
                f"{format_usd(taken.deferred)} to collect from open reservations, shortfall "
                f"{format_usd(shortfall)}; it stays frozen")
    return f"dispute {dispute_id} closed as {outcome[:20]}: nothing to do"


Handler = Callable[[StripeEvent, PaymentsContext], Awaitable[str]]

#: Event types handled; every other type is answered 200 and ignored.
async def on_refund_failed(event: StripeEvent, ctx: PaymentsContext) -> str:
    """A refund that was debited while pending, then failed: give the credit back, once."""
    refund = event.object
    if refund.get("status") not in ("failed", "canceled"):
        return f"refund {text(refund, 'id')} is {str(refund.get('status'))[:20]}"
    refund_id = text(refund, "id")
    debits = await LedgerEntry.filter(reference__startswith="refund:",
                                      reference__endswith=f":{refund_id}").all()
    if not debits:
        return f"ignored: refund {refund_id} was never debited"
    duplicate = await give_back_refund(debits[0], refund_id, ctx)
    return f"refund {refund_id} failed: {'already given back' if duplicate else 'given back'}"


def refund_reference(session_id: str, refund_id: str) -> str:
    return f"refund:{session_id}:{refund_id}"


def given_back_reference(debit_reference: str) -> str:
    """The reference of the credit that undoes a failed refund's debit."""
    return f"refund-failed:{debit_reference}"


def session_of(reference: str) -> str | None:
    """The Checkout Session a payment's ledger reference names (the forms at the top of
    this module); None for a reference that is no payment's."""
    kind, _, rest = reference.partition(":")
    if kind == "refund-failed":  # refund-failed:refund:<session id>:<refund id>
        kind, _, rest = rest.partition(":")
        if kind != "refund":
            return None
    if kind not in ("checkout", "refund", "dispute"):
        return None
    return rest.split(":", 1)[0] or None


async def take_back_refund(payment: Payment, refund: Mapping[str, Any],
                           ctx: PaymentsContext) -> Credited | None:
    """Debit one refund of ``payment`` from its key, once: ``(applied, duplicate, deferred)``.

    None when the payment was never credited (refused at completion): there is
    nothing of it to take back, and the key's other credit is not its to lose.
    """
    if not await LedgerEntry.exists(reference=topup_reference(payment.session_id)):
        return None
    refund_id = text(refund, "id")
    return await _credit(
        payment.account_id, -to_micros(cents(refund, "amount"), payment.currency),
        reference=refund_reference(payment.session_id, refund_id), kind=LedgerKind.REFUND,
        note=f"Stripe refund {refund_id} of {payment.session_id}", store=ctx.store)


async def record_refunded(payment: Payment, refunded: int, *, full: bool) -> None:
    """Note on the payment what Stripe says was refunded (it only grows)."""
    now = datetime.now(UTC)
    await Payment.filter(id=payment.id, refunded__lt=refunded).update(refunded=refunded,
                                                                       updated_at=now)
    status = PaymentStatus.REFUNDED if full else PaymentStatus.PARTIALLY_REFUNDED
    await Payment.filter(id=payment.id).exclude(status=PaymentStatus.DISPUTED).update(
        status=status, updated_at=now)


async def give_back_refund(debit: LedgerEntry, refund_id: str, ctx: PaymentsContext) -> bool:
    """Undo the debit of a refund that failed, once; True when it was already undone."""
    return (await _credit(
        debit.account_id, -debit.amount, reference=given_back_reference(debit.reference),
        kind=LedgerKind.ADJUSTMENT, note=f"Stripe refund {refund_id} failed",
        store=ctx.store)).duplicate


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_session_completed,
    "checkout.session.async_payment_succeeded": on_session_completed,
    "checkout.session.async_payment_failed": on_session_async_failed,
    "checkout.session.expired": on_session_expired,
    "charge.refunded": on_charge_refunded,
    "charge.dispute.created": on_dispute_created,
    "charge.dispute.closed": on_dispute_closed,
    "charge.refund.updated": on_refund_failed,
    "refund.failed": on_refund_failed,
}
