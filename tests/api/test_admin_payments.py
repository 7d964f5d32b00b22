"""``/admin/payments``: a payment's whole story (its session, ledger rows, refunds, disputes and
Stripe events) and the filters of the lists, in-process against a fake Stripe.

The payment goes through what Stripe really sends: checkout, a refund, that refund
failing, a dispute opened and lost; each event is signed and delivered to the webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.billing import credits
from edge.db.models import ApiKey
from tests.support.fake_stripe import FakeStripe, event_payload, fake_stripe, sign
from tests.support.inprocess import InProcessPortal, open_portal

TOKEN = "payments-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
SECRET_KEY = "sk_test_admin_payments"
WEBHOOK_SECRET = "whsec_test_admin_payments"


@pytest.fixture(autouse=True)
def drain_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bookkeeper runs beside the in-process portal: a credit drains the stream itself."""
    monkeypatch.setattr(credits, "BOOKKEEPER_GRACE", 0.0)


@pytest.fixture
async def shop(tmp_path: Path, redis_url: str,
               sqlite_template: Path) -> AsyncIterator[tuple[InProcessPortal, FakeStripe]]:
    """A portal that takes payments through a fake Stripe."""
    with fake_stripe(SECRET_KEY) as stripe:
        async with open_portal(tmp_path, redis_url, template=sqlite_template,
                               admin_token=TOKEN, stripe_secret_key=SECRET_KEY,
                               stripe_webhook_secret=WEBHOOK_SECRET,
                               stripe_api_base=stripe.url) as portal:
            yield portal, stripe


async def deliver(portal: InProcessPortal, event_type: str, obj: dict[str, Any]) -> str:
    """Deliver a signed event; returns what the portal says it did."""
    payload = event_payload(event_type, obj)
    answer = await portal.client.post("/webhooks/stripe", content=payload, headers={
        "content-type": "application/json", "stripe-signature": sign(payload, WEBHOOK_SECRET)})
    assert answer.status_code == 200, answer.text
    outcome: str = answer.json()["outcome"]
    return outcome


async def paid_session(portal: InProcessPortal, stripe: FakeStripe, secret: str,
                       amount: str) -> str:
    opened = await portal.client.post("/api/topup", json={"amount": amount},
                                      headers={"authorization": f"Bearer {secret}"})
    assert opened.status_code == 200, opened.text
    session_id: str = opened.json()["id"]
    await deliver(portal, "checkout.session.completed", stripe.pay(session_id))
    return session_id


async def test_a_payments_whole_story(shop: tuple[InProcessPortal, FakeStripe]) -> None:
    portal, stripe = shop
    http = portal.client
    key_id, secret = await portal.create_key("0")
    account = (await ApiKey.get(id=key_id)).account_id
    sid = await paid_session(portal, stripe, secret, "25.00")
    charge = stripe.refund(sid, 500)  # $5 back to the card
    refund = charge["refunds"]["data"][0]
    await deliver(portal, "charge.refunded", charge)
    assert await deliver(portal, "refund.failed", {**refund, "status": "failed"}) == \
        f"refund {refund['id']} failed: given back"
    dispute = stripe.dispute(sid, amount=1000)  # $10 of it
    await deliver(portal, "charge.dispute.created", dispute)
    await deliver(portal, "charge.dispute.closed", {**dispute, "status": "lost"})

    payment_id = (await http.get("/admin/payments", headers=ADMIN)).json()["data"][0][
        "payment_id"]
    story = (await http.get(f"/admin/payments/{payment_id}", headers=ADMIN)).json()
    assert (await http.get(f"/admin/payments/{sid}", headers=ADMIN)).json() == story
    assert {k: story[k] for k in ("id", "payment_id", "account_id", "status", "paid_micros",
                                  "refunded_micros", "credited_micros", "debited_micros")} == {
        "id": sid, "payment_id": payment_id, "account_id": account, "status": "disputed",
        "paid_micros": 25_000_000, "refunded_micros": 5_000_000,
        "credited_micros": 25_000_000,
        "debited_micros": 10_000_000}  # the refund was given back: only the dispute's
    assert [(r["kind"], r["amount_micros"], r["reference"]) for r in story["ledger"]] == [
        ("topup", 25_000_000, f"checkout:{sid}"),
        ("refund", -5_000_000, f"refund:{sid}:{refund['id']}"),
        ("adjustment", 5_000_000, f"refund-failed:refund:{sid}:{refund['id']}"),
        ("refund", -10_000_000, f"dispute:{sid}:{dispute['id']}")]
    assert all(r["account"] == account for r in story["ledger"])
    assert story["refunds"] == [{"id": refund["id"], "debited": "5.000000",
                                 "debited_micros": 5_000_000, "given_back": "5.000000",
                                 "given_back_micros": 5_000_000}]
    assert story["disputes"] == [{"id": dispute["id"], "debited": "10.000000",
                                  "debited_micros": 10_000_000}]
    assert [(e["type"], e["matched_by"]) for e in story["events"]] == [
        ("charge.dispute.closed", "dispute"), ("charge.dispute.created", "dispute"),
        ("refund.failed", "refund"), ("charge.refunded", "account"),
        ("checkout.session.completed", "account")]
    assert story["events"][-1]["outcome"] == f"credited 25.000000 to account {account}"
    shown = (await http.get(f"/admin/accounts/{account}", headers=ADMIN)).json()
    assert (shown["balance_micros"], shown["frozen"], shown["open_disputes"]) == (
        15_000_000, True, 1)


async def test_another_accounts_events_are_not_in_the_story(
        shop: tuple[InProcessPortal, FakeStripe]) -> None:
    portal, stripe = shop
    first_key, first = await portal.create_key("0")
    sid = await paid_session(portal, stripe, first, "5.00")
    # Accounts until one whose id starts with the first's digits (3 and 31, say).
    first_account = (await ApiKey.get(id=first_key)).account_id
    while True:
        other_key, other = await portal.create_key("0")
        other_account = (await ApiKey.get(id=other_key)).account_id
        if str(other_account).startswith(str(first_account)):
            break
    await paid_session(portal, stripe, other, "7.00")
    story = (await portal.client.get(f"/admin/payments/{sid}", headers=ADMIN)).json()
    assert [e["outcome"] for e in story["events"]] == [
        f"credited 5.000000 to account {first_account}"]


async def test_the_lists_filters(shop: tuple[InProcessPortal, FakeStripe]) -> None:
    portal, stripe = shop
    http = portal.client
    key_id, secret = await portal.create_key("0")
    account = (await ApiKey.get(id=key_id)).account_id
    paid = await paid_session(portal, stripe, secret, "5.00")
    stripe_refund = stripe.refund(paid, 500)
    await deliver(portal, "charge.refunded", stripe_refund)
    assert await deliver(portal, "customer.created", {"id": "cus_1"}) == "ignored"
    _other_key, other = await portal.create_key("0")
    await paid_session(portal, stripe, other, "9.00")

    def types(answer: Any) -> list[str]:
        assert answer.status_code == 200, answer.text
        return [e["type"] for e in answer.json()["data"]]

    events = "/admin/payments/events"
    assert types(await http.get(events, headers=ADMIN)) == [
        "checkout.session.completed", "customer.created", "charge.refunded",
        "checkout.session.completed"]
    assert types(await http.get(events, params={"type": "charge.refunded"},
                                headers=ADMIN)) == ["charge.refunded"]
    assert types(await http.get(events, params={"ignored": "true"}, headers=ADMIN)) == [
        "customer.created"]
    assert types(await http.get(events, params={"ignored": "false", "limit": "2"},
                                headers=ADMIN)) == ["checkout.session.completed",
                                                    "charge.refunded"]
    mine = (await http.get("/admin/payments", params={"account_id": str(account)},
                           headers=ADMIN)).json()["data"]
    assert [(p["id"], p["status"]) for p in mine] == [(paid, "refunded")]
    refunded = (await http.get("/admin/payments", params={"status": "refunded"},
                               headers=ADMIN)).json()["data"]
    assert [p["id"] for p in refunded] == [paid]

    for path, params, param in (
            (events, {"ignored": "maybe"}, "ignored"), (events, {"type": "t" * 101}, "type"),
            (events, {"limit": "0"}, "limit"), (events, {"limit": "501"}, "limit"),
            ("/admin/payments", {"account_id": "x"}, "account_id"),
            ("/admin/payments", {"account_id": "0"}, "account_id"),
            ("/admin/payments", {"status": "lost"}, "status")):
        refused = await http.get(path, params=params, headers=ADMIN)
        assert refused.status_code == 400, (path, params)
        assert refused.json()["error"]["param"] == param
    for missing in ("999999", "cs_test_nope", "99999999999999999999999"):
        assert (await http.get(f"/admin/payments/{missing}", headers=ADMIN)).status_code == 404
    for path in ("/admin/payments", events, f"/admin/payments/{paid}"):
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers={"authorization": "Bearer no"})).status_code == 401
