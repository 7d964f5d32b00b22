"""The Stripe webhook credits exactly once, on Stripe's signed word only (invariants 4, 5).

Every case runs on SQLite and on PostgreSQL, over 2 edge workers, and ends with
the books balanced: SQL balance = sum of the ledger = live balance, never negative.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.payments.conftest import CENT, WEBHOOK_SECRET, Shop, until
from tests.support.fake_stripe import event_payload, sign
from tests.support.workers import statuses_by_worker


async def connections_per_worker(url: str, each: int) -> list[httpx.AsyncClient]:
    """``each`` kept-alive connections to every one of the 2 workers, one client apiece."""
    by_worker: dict[str, list[httpx.AsyncClient]] = {}
    spare: list[httpx.AsyncClient] = []
    for _attempt in range(40):
        if len(by_worker) == 2 and all(len(c) == each for c in by_worker.values()):
            break
        # Kept for as long as gathering takes (httpx drops an idle connection after 5 s
        # by default, and its replacement may reach the other worker).
        clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(
            max_connections=1, keepalive_expiry=300)) for _ in range(20)]
        answers = await asyncio.gather(*(c.get("/api/payments/config") for c in clients))
        for client, answer in zip(clients, answers, strict=True):
            group = by_worker.setdefault(answer.headers["x-portal-worker"], [])
            (group if len(group) < each else spare).append(client)
    await asyncio.gather(*(client.aclose() for client in spare))
    assert sorted(len(c) for c in by_worker.values()) == [each, each], "one worker never answered"
    return [client for group in by_worker.values() for client in group]


def ledger(shop: Shop, reference: str) -> list[tuple]:
    return shop.sql("SELECT amount, kind, note FROM ledger WHERE reference=?", reference)


def test_a_paid_session_credits_once(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.open_session(key, "25.00")
    assert shop.live_balance(key_id) == 0

    payload = event_payload("checkout.session.completed", shop.stripe.pay(session_id))
    first = shop.deliver(payload, sign(payload, WEBHOOK_SECRET))
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False
    # 200 means durable: the ledger row is in SQL already, no waiting.
    assert ledger(shop, f"checkout:{session_id}") == [
        (25_000_000, "topup", f"Stripe checkout {session_id}")]
    assert shop.live_balance(key_id) == 25_000_000

    again = shop.deliver(payload, sign(payload, WEBHOOK_SECRET))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    payment = shop.payment(session_id)
    assert payment["status"] == "paid" and payment["paid"] == 25_000_000
    assert payment["payment_intent"].startswith("pi_")
    assert shop.assert_books_balance(key_id) == 25_000_000


def test_the_same_event_50_times_at_once_over_both_workers_credits_once(
        any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key("1")
    session_id = shop.open_session(key, "40.00")
    payload = event_payload("checkout.session.completed", shop.stripe.pay(session_id))
    signature = sign(payload, WEBHOOK_SECRET)

    async def deliver_all() -> list[httpx.Response]:
        # 25 open connections to each worker first, so the race is truly between them.
        clients = await connections_per_worker(shop.url, 25)
        try:
            return list(await asyncio.gather(*(
                client.post("/webhooks/stripe", content=payload,
                            headers={"stripe-signature": signature}) for client in clients)))
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(deliver_all())

    assert [r.status_code for r in responses] == [200] * 50, \
        {r.status_code: r.text for r in responses}
    workers = [r.headers["x-portal-worker"] for r in responses]
    assert sorted(workers.count(w) for w in set(workers)) == [25, 25]
    assert len(ledger(shop, f"checkout:{session_id}")) == 1
    assert shop.sql("SELECT COUNT(*) FROM webhook_events WHERE id=?",
                    json.loads(payload)["id"]) == [(1,)]
    assert shop.assert_books_balance(key_id) == 41_000_000


def test_two_events_for_one_session_credit_once(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.paid(key, "10.00")
    late = shop.send("checkout.session.async_payment_succeeded", shop.stripe.session(session_id))
    assert late.status_code == 200
    assert late.json()["outcome"].startswith("already credited")
    assert shop.assert_books_balance(key_id) == 10_000_000


def test_a_delayed_payment_credits_when_it_succeeds(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.open_session(key, "15.00")
    unpaid = shop.send("checkout.session.completed",
                       shop.stripe.pay(session_id, status="unpaid"))
    assert unpaid.status_code == 200 and "not paid" in unpaid.json()["outcome"]
    assert shop.assert_books_balance(key_id) == 0
    assert shop.payment(session_id)["status"] == "created"

    settled = shop.send("checkout.session.async_payment_succeeded",
                        shop.stripe.settle_async(session_id))
    assert settled.status_code == 200
    assert shop.payment(session_id)["status"] == "paid"
    assert shop.assert_books_balance(key_id) == 15_000_000

    failing_id = shop.open_session(key, "20.00")
    failed = shop.send("checkout.session.async_payment_failed",
                       shop.stripe.pay(failing_id, status="unpaid"))
    assert failed.status_code == 200
    assert shop.payment(failing_id)["status"] == "failed"

    abandoned_id = shop.open_session(key, "5.00")
    expired = shop.send("checkout.session.expired",
                        dict(shop.stripe.session(abandoned_id), status="expired"))
    assert expired.status_code == 200
    assert shop.payment(abandoned_id)["status"] == "expired"
    assert shop.assert_books_balance(key_id) == 15_000_000


def test_refused_deliveries_change_nothing(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.open_session(key, "30.00")
    payload = event_payload("checkout.session.completed", shop.stripe.pay(session_id))
    body = json.loads(payload)
    body["data"]["object"]["amount_total"] = 3_000_000  # $30,000 instead of $30
    tampered = json.dumps(body)
    before = shop.counts()

    refusals = {
        "tampered body": shop.deliver(tampered, sign(payload, WEBHOOK_SECRET)),
        "wrong secret": shop.deliver(payload, sign(payload, "whsec_not_the_right_one")),
        "old timestamp": shop.deliver(payload, sign(payload, WEBHOOK_SECRET,
                                                    timestamp=int(time.time()) - 600)),
        "missing header": shop.deliver(payload, None),
        "garbage header": shop.deliver(payload, "t=yesterday,v1=zz"),
        "no v1 signature": shop.deliver(payload, f"t={int(time.time())},v0=abc"),
    }

    for case, response in refusals.items():
        assert response.status_code == 400, (case, response.text)
        assert response.json()["error"]["code"] == "webhook_refused", case
    assert shop.counts() == before
    assert shop.payment(session_id)["status"] == "created"
    assert shop.assert_books_balance(key_id) == 0


def test_signed_garbage_is_refused_with_nothing_changed(any_shop: Shop) -> None:
    shop = any_shop
    before = shop.counts()
    for body in ('{"id": "evt_1", "type": "checkout.session.completed", "data": {',
                 "[]", '"event"', '{"id": "evt_2", "type": "charge.refunded"}',
                 '{"id": 5, "type": "x", "data": {"object": {}}}',
                 '{"id": "evt_3", "type": "checkout.session.completed", '
                 '"data": {"object": {"payment_status": "paid"}}}'):
        response = shop.deliver(body, sign(body, WEBHOOK_SECRET))
        assert response.status_code == 400, (body, response.text)
    assert shop.counts() == before


def test_an_unknown_event_is_acknowledged_and_ignored(any_shop: Shop) -> None:
    shop = any_shop
    before = shop.counts()
    response = shop.send("customer.created", {"id": "cus_test_1", "object": "customer"})
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    after = shop.counts()
    assert after["ledger"] == before["ledger"] and after["payments"] == before["payments"]


def test_a_refund_after_spending_takes_back_what_is_left(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.paid(key, "10.00")
    cost = shop.spend(key)
    assert 0 < cost < 10_000_000
    assert shop.assert_books_balance(key_id) == 10_000_000 - cost

    charge = shop.stripe.refund(session_id, 1000)  # all $10 back to the card
    response = shop.send("charge.refunded", charge)

    assert response.status_code == 200, response.text
    refund_id = charge["refunds"]["data"][0]["id"]
    ((amount, kind, note),) = ledger(shop, f"refund:{session_id}:{refund_id}")
    assert (amount, kind) == (-(10_000_000 - cost), "refund")
    assert "asked -10000000" in note  # the shortfall, on record
    assert f"shortfall {cost / 1e6:.6f}" in response.json()["outcome"]
    payment = shop.payment(session_id)
    assert payment["status"] == "refunded" and payment["refunded"] == 10_000_000
    assert payment["charge_id"] == charge["id"]
    assert shop.assert_books_balance(key_id) == 0

    again = shop.send("charge.refunded", charge)  # a new event id, the same refund
    assert again.status_code == 200
    assert shop.assert_books_balance(key_id) == 0


def test_a_refund_that_arrives_before_the_completion(shop: Shop) -> None:
    """Stripe does not order its events: the refund finds its top-up all the same."""
    key_id, key = shop.key()
    session_id = shop.open_session(key, "25.00")
    completed = shop.stripe.pay(session_id)  # delivered late, below
    charge = shop.stripe.refund(session_id, 2500)
    response = shop.send("charge.refunded", charge)
    assert response.status_code == 200, response.text
    assert "ignored" not in response.json()["outcome"]
    assert shop.stripe.calls("GET", "/v1/checkout/sessions")  # it asked whose intent it is
    assert shop.assert_books_balance(key_id) == 0  # credited, then taken back
    late = shop.send("checkout.session.completed", completed)
    assert late.status_code == 200 and late.json()["duplicate"] is False
    assert shop.assert_books_balance(key_id) == 0  # the late completion credits nothing more
    assert shop.payment(session_id)["status"] == "refunded"


def test_partial_refunds_each_debit_once(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.paid(key, "20.00")
    assert shop.send("charge.refunded", shop.stripe.refund(session_id, 500)).status_code == 200
    assert shop.payment(session_id)["status"] == "partially_refunded"
    assert shop.assert_books_balance(key_id) == 15_000_000

    second = shop.stripe.refund(session_id, 300)  # lists both refunds, $8 refunded in all
    assert second["amount_refunded"] == 800
    assert shop.send("charge.refunded", second).status_code == 200
    assert shop.assert_books_balance(key_id) == 12_000_000
    assert shop.payment(session_id)["refunded"] == 800 * CENT

    # An event that does not list the refunds: the portal asks Stripe for them.
    third = shop.stripe.refund(session_id, 200)
    del third["refunds"]
    assert shop.send("charge.refunded", third).status_code == 200
    assert shop.stripe.calls("GET", "/v1/refunds")
    assert shop.assert_books_balance(key_id) == 10_000_000


def test_a_dispute_freezes_the_key_everywhere_until_it_is_won(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.paid(key, "12.00")
    warm = asyncio.run(statuses_by_worker(shop.url, key))
    assert len(warm) == 2 and all(s == {200} for s in warm.values())  # cached on both

    dispute = shop.stripe.dispute(session_id)
    assert shop.send("charge.dispute.created", dispute).status_code == 200
    frozen_at = time.monotonic()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - frozen_at)))
    after = asyncio.run(statuses_by_worker(shop.url, key))
    assert len(after) == 2 and all(s == {403} for s in after.values()), after
    assert shop.topup(key, "10").status_code == 403
    history = httpx.get(shop.url + "/v1/key/payments",
                        headers={"authorization": f"Bearer {key}"})
    assert history.status_code == 200  # a frozen key still sees why
    assert history.json()["data"][0]["status"] == "disputed"

    won = dict(dispute, status="won")
    assert shop.send("charge.dispute.closed", won).json()["outcome"].endswith("unfrozen")
    time.sleep(1.0)
    thawed = asyncio.run(statuses_by_worker(shop.url, key))
    assert len(thawed) == 2 and all(s == {200} for s in thawed.values()), thawed
    assert shop.payment(session_id)["status"] == "paid"
    assert shop.assert_books_balance(key_id) == 12_000_000


def test_a_lost_dispute_takes_the_credit_back_and_keeps_the_key_frozen(any_shop: Shop) -> None:
    shop = any_shop
    key_id, key = shop.key()
    session_id = shop.paid(key, "8.00")
    dispute = shop.stripe.dispute(session_id)
    shop.send("charge.dispute.created", dispute)
    lost = shop.send("charge.dispute.closed", dict(dispute, status="lost"))
    assert lost.status_code == 200 and "stays frozen" in lost.json()["outcome"]
    assert until(lambda: shop.sql("SELECT frozen FROM accounts WHERE id=?", key_id)[0][0])
    assert shop.assert_books_balance(key_id) == 0
    assert ledger(shop, f"dispute:{session_id}:{dispute['id']}")[0][0] == -8_000_000


def test_a_refund_that_fails_gives_the_credit_back_once(shop: Shop) -> None:
    key_id, key = shop.key()
    session_id = shop.paid(key, "10.00")
    charge = shop.stripe.refund(session_id, 400)
    refund = charge["refunds"]["data"][0]
    refund["status"] = "pending"
    assert shop.send("charge.refunded", charge).status_code == 200
    assert shop.assert_books_balance(key_id) == 6_000_000
    failed = {**refund, "status": "failed"}
    for _ in range(2):
        response = shop.send("refund.failed", failed)
        assert response.status_code == 200, response.text
    assert shop.assert_books_balance(key_id) == 10_000_000
