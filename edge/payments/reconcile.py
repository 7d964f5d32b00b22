"""Compare a day of Stripe Checkout Sessions with the portal's payments and ledger.

Stripe is asked for the sessions created that day (UTC); the portal's payments
of the day that Stripe did not list (created across midnight) are fetched one by
one. Each session is matched with its top-up in the ledger (``checkout:<id>``):

* paid at Stripe, not credited      → ``not credited`` (``--apply`` credits it, once)
* credited, not paid at Stripe      → ``credited but not paid``
* credited a different amount       → ``credited X, paid Y``
* paid with portal metadata, but no payment row → ``unknown to the portal``

and each refund Stripe lists for the session's payment with its debit
(``refund:<session>:<refund>``):

* refunded at Stripe, not taken back   → ``refund <id> not taken back`` (``--apply`` debits it)
* taken back, but failed at Stripe     → ``refund <id> failed, not given back``
  (``--apply`` gives it back)
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from edge.billing.money import format_usd
from edge.db.models import LedgerEntry, Payment
from edge.errors import PortalError
from edge.payments.config import stripe_client
from edge.payments.currency import to_micros
from edge.payments.handlers import (
    REFUNDING,
    PaymentsContext,
    credit_session,
    give_back_refund,
    given_back_reference,
    record_refunded,
    refund_reference,
    take_back_refund,
    topup_reference,
)

__all__ = ["Line", "StripeUnreachable", "apply_missing", "reconcile_day"]

#: Refund lists asked of Stripe at once (its rate limit is 100 reads/s).
REFUND_LOOKUPS = 8


class StripeUnreachable(PortalError):
    """Stripe's API did not answer the reconciliation's questions."""


@dataclasses.dataclass(slots=True)
class Line:
    """One session, as Stripe and the portal each see it."""

    session_id: str
    account_id: int | None
    status: str  # the portal's payment status, or "-" when it has none
    stripe_status: str  # Stripe's payment_status (paid, unpaid, ...), or "missing"
    paid: int  # micro-dollars Stripe says were paid
    credited: int  # micro-dollars the ledger credited for it
    problem: str  # empty when both sides agree
    session: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    payment: Payment | None = dataclasses.field(default=None, repr=False)
    refunded: int = 0  # micro-dollars Stripe refunded (or is refunding)
    taken: int = 0  # micro-dollars the ledger's refund debits took back, net of give-backs
    untaken: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    ungiven: list[tuple[LedgerEntry, str]] = dataclasses.field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        return {"session": self.session_id, "account": self.account_id, "status": self.status,
                "stripe": self.stripe_status, "paid": format_usd(self.paid),
                "credited": format_usd(self.credited), "refunded": format_usd(self.refunded),
                "taken back": format_usd(self.taken), "problem": self.problem}


async def reconcile_day(ctx: PaymentsContext, day: date) -> list[Line]:
    """Every portal top-up session of ``day`` (UTC), with the differences found.

    Raises:
      PaymentsOff: no Stripe secret key.
      StripeUnreachable: Stripe's API failed.
    """
    import stripe

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    client = stripe_client(ctx.settings)
    sessions: dict[str, dict[str, Any]] = {}
    try:
        page = await client.v1.checkout.sessions.list_async(params={
            "created": {"gte": int(start.timestamp()), "lt": int(end.timestamp())},
            "limit": 100})
        async for found in page.auto_paging_iter():
            sessions[found.id] = found.to_dict()
        ours = {p.session_id: p for p in await Payment.filter(session_id__in=list(sessions))}
        for row in await Payment.filter(created_at__gte=start, created_at__lt=end):
            ours[row.session_id] = row
            if row.session_id not in sessions:
                fetched = await client.v1.checkout.sessions.retrieve_async(row.session_id)
                sessions[row.session_id] = fetched.to_dict()
    except stripe.StripeError as exc:
        raise StripeUnreachable(str(exc)) from exc
    credits: dict[str, int] = {}
    for reference, amount in await LedgerEntry.filter(
            reference__in=[topup_reference(s) for s in sessions]).values_list("reference",
                                                                               "amount"):
        credits[reference.split(":", 1)[1]] = amount
    lines = []
    for session_id, session in sessions.items():
        payment = ours.get(session_id)
        metadata = session.get("metadata") or {}
        if payment is None and not (metadata.get("account_id") or metadata.get("key_id")):
            continue  # another product sold on the same Stripe account
        lines.append(_line(session_id, session, payment, credits.get(session_id, 0)))
    await _compare_refunds(client, [line for line in lines if line.payment is not None])
    return sorted(lines, key=lambda line: (line.problem == "", line.session_id))


async def _compare_refunds(client: Any, lines: list[Line]) -> None:
    """Match every refund Stripe lists for each line's payment with its ledger debit."""
    import stripe

    asking = asyncio.Semaphore(REFUND_LOOKUPS)

    async def refunds_of(line: Line) -> list[dict[str, Any]]:
        intent = (line.session or {}).get("payment_intent")
        if not isinstance(intent, str) or not intent:
            return []
        async with asking:
            page = await client.v1.refunds.list_async(
                params={"payment_intent": intent, "limit": 100})
            return [refund.to_dict() async for refund in page.auto_paging_iter()]

    try:
        listed = await asyncio.gather(*(refunds_of(line) for line in lines))
    except stripe.StripeError as exc:
        raise StripeUnreachable(str(exc)) from exc
    prefixes = [refund_reference(line.session_id, "") for line in lines]
    debits: dict[str, LedgerEntry] = {}
    given_back: set[str] = set()
    for prefix in prefixes:
        for entry in await LedgerEntry.filter(reference__startswith=prefix):
            debits[entry.reference] = entry
        # A flat values_list is a list of values; Tortoise types it as a list of tuples.
        given_back.update(cast(list[str], await LedgerEntry.filter(
            reference__startswith=given_back_reference(prefix)).values_list("reference",
                                                                            flat=True)))
    for line, refunds in zip(lines, listed, strict=True):
        problems = [line.problem] if line.problem else []
        currency = line.payment.currency if line.payment is not None else ""
        for refund in refunds:
            refund_id = str(refund.get("id"))
            reference = refund_reference(line.session_id, refund_id)
            debit = debits.get(reference)
            undone = given_back_reference(reference) in given_back
            if refund.get("status") in REFUNDING:
                line.refunded += to_micros(int(refund.get("amount") or 0), currency)
                if debit is None:
                    line.untaken.append(refund)
                    problems.append(f"refund {refund_id} not taken back")
            elif debit is not None and not undone:
                line.ungiven.append((debit, refund_id))
                problems.append(f"refund {refund_id} failed, not given back")
            if debit is not None and not undone:
                line.taken -= debit.amount
        line.problem = "; ".join(problems)


def _line(session_id: str, session: dict[str, Any], payment: Payment | None,
          credited: int) -> Line:
    stripe_status = str(session.get("payment_status") or "unknown")
    total = session.get("amount_total")
    paid = 0
    if stripe_status == "paid" and isinstance(total, int):
        currency = session.get("currency") or (payment.currency if payment else "")
        paid = to_micros(total, str(currency))
    problem = ""
    if payment is None:
        problem = "unknown to the portal" if paid else ""
    elif paid and not credited:
        problem = "not credited"
    elif credited and not paid:
        problem = "credited but not paid"
    elif credited != paid:
        problem = f"credited {format_usd(credited)}, paid {format_usd(paid)}"
    # A session opened before accounts names only its key, whose id its account kept.
    metadata = session.get("metadata") or {}
    account_id = payment.account_id if payment else _int(
        metadata.get("account_id") or metadata.get("key_id"))
    return Line(session_id, account_id, str(payment.status) if payment else "-", stripe_status,
                paid, credited, problem, session, payment)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


async def apply_missing(ctx: PaymentsContext, lines: list[Line]) -> list[str]:
    """Do what the missed webhooks would have done: credit paid sessions, debit refunds
    and give back failed ones, each once by its reference."""
    import stripe

    client = stripe_client(ctx.settings)
    outcomes = []
    for line in lines:
        if line.problem.startswith("not credited") and line.session is not None:
            outcomes.append(f"{line.session_id}: {await credit_session(line.session, ctx)}")
        payment = line.payment
        if payment is not None and line.untaken:
            for listed in line.untaken:
                try:  # as it is now: it may have failed since it was listed
                    refund = (await client.v1.refunds.retrieve_async(
                        str(listed["id"]))).to_dict()
                except stripe.StripeError as exc:
                    raise StripeUnreachable(str(exc)) from exc
                if refund.get("status") not in REFUNDING:
                    outcomes.append(f"{line.session_id}: refund {refund.get('id')} is "
                                    f"{refund.get('status')} now; nothing taken")
                    continue
                taken = await take_back_refund(payment, refund, ctx)
                if taken is None:
                    outcomes.append(f"{line.session_id}: refund {refund.get('id')} not taken "
                                    "back: the payment was never credited")
                    continue
                outcomes.append(f"{line.session_id}: refund {refund.get('id')} took back "
                                f"{format_usd(-taken[0])} of account {payment.account_id}")
            await record_refunded(payment, line.refunded, full=line.refunded >= line.paid > 0)
        for debit, refund_id in line.ungiven:
            await give_back_refund(debit, refund_id, ctx)
            outcomes.append(f"{line.session_id}: refund {refund_id} failed, gave back "
                            f"{format_usd(-debit.amount)} to account {debit.account_id}")
    return outcomes
