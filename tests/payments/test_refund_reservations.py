"""A refund or a lost dispute that arrives while a request holds the key's credit.

The node is made to hang, so a real chat request stays open holding its
reservation while Stripe's event is delivered. The free balance is taken at once
and the rest when the request settles, from what its reservation releases; the
books end balanced (SQL balance = sum of the ledger = live balance) with nothing
of the refunded credit left to spend.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import redis

from edge.billing.money import format_usd
from tests.payments.conftest import MODEL, Shop, until


def _get(shop: Shop, what: str, key_id: int) -> int:
    client = redis.Redis.from_url(shop.portal.redis_url)
    try:
        return int(client.get(f"{shop.portal.namespace}:{what}:{key_id}") or 0)
    finally:
        client.close()


@contextmanager
def open_request(shop: Shop, key: str,
                 key_id: int) -> Iterator[tuple[int, concurrent.futures.Future]]:
    """A chat request held open on a hanging node: ``(micro-dollars it holds, its reply)``.

    The node answers once the block is left.
    """
    faults = shop.node.url + "/sim/faults"
    assert httpx.post(faults, json={"hang": True}).status_code == 200
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        reply = pool.submit(
            httpx.post, shop.url + "/v1/chat/completions", timeout=60,
            headers={"authorization": f"Bearer {key}"},
            json={"model": MODEL, "max_tokens": 16,
                  "messages": [{"role": "user", "content": "Hi."}]})
        held = until(lambda: _get(shop, "held", key_id), timeout=10)
        assert held, "the request never reserved"
        yield held, reply
    finally:
        httpx.post(faults, json={"hang": False})
        pool.shutdown(wait=True)


def _finish(shop: Shop, reply: concurrent.futures.Future) -> tuple[str, int]:
    response = reply.result(timeout=60)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    return request_id, -shop.wait_usage(request_id)


def _ledger(shop: Shop, reference: str) -> list[tuple]:
    return shop.sql("SELECT amount, kind FROM ledger WHERE reference=?", reference)


def _settled_books(shop: Shop, key_id: int, request_id: str, collected: int) -> None:
    assert until(lambda: _ledger(shop, f"owed:{request_id}")) == [(-collected, "refund")]
    assert until(lambda: shop.sql("SELECT owed FROM accounts WHERE id=?", key_id)[0][0] == 0)
    assert _get(shop, "owed", key_id) == 0 and _get(shop, "held", key_id) == 0
    assert shop.assert_books_balance(key_id) == 0
    (count, distinct), = shop.sql("SELECT COUNT(*), COUNT(DISTINCT reference) FROM ledger "
                                  "WHERE account_id=?", key_id)
    assert count == distinct


def test_a_full_refund_while_a_request_holds_credit_collects_it_when_it_settles(
        shop: Shop) -> None:
    key_id, key = shop.key()
    session_id = shop.paid(key, "5.00")
    with open_request(shop, key, key_id) as (held, reply):
        free = 5_000_000 - held
        assert shop.live_balance(key_id) == free
        charge = shop.stripe.refund(session_id, 500)  # all $5 back to the card
        response = shop.send("charge.refunded", charge)
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == (
            f"refunded 5.000000 of account {key_id}: debited {format_usd(free)} now, "
            f"{format_usd(held)} to collect from open reservations, shortfall 0.000000")
        refund_id = charge["refunds"]["data"][0]["id"]
        assert _ledger(shop, f"refund:{session_id}:{refund_id}") == [(-free, "refund")]
        assert shop.live_balance(key_id) == 0
        assert shop.sql("SELECT owed FROM accounts WHERE id=?", key_id) == [(held,)]
    request_id, cost = _finish(shop, reply)
    assert 0 < cost < held
    _settled_books(shop, key_id, request_id, collected=held - cost)
    # Delivered again: nothing more is taken, and nothing is given back.
    assert shop.send("charge.refunded", charge).json()["outcome"].endswith("already taken back")
    assert shop.assert_books_balance(key_id) == 0


def test_a_dispute_lost_while_a_request_holds_credit(shop: Shop) -> None:
    key_id, key = shop.key()
    session_id = shop.paid(key, "8.00")
    dispute = shop.stripe.dispute(session_id)
    with open_request(shop, key, key_id) as (held, reply):
        assert shop.send("charge.dispute.created", dispute).status_code == 200  # frozen
        lost = shop.send("charge.dispute.closed", dict(dispute, status="lost"))
        assert lost.status_code == 200, lost.text
        free = 8_000_000 - held
        assert lost.json()["outcome"] == (
            f"dispute {dispute['id']} lost; account {key_id} debited {format_usd(free)} of "
            f"8.000000 now, {format_usd(held)} to collect from open reservations, "
            "shortfall 0.000000; it stays frozen")
    request_id, cost = _finish(shop, reply)  # admitted before the freeze: it completes
    _settled_books(shop, key_id, request_id, collected=held - cost)
    assert _ledger(shop, f"dispute:{session_id}:{dispute['id']}") == [(-free, "refund")]
