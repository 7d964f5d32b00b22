"""``POST /api/topup`` opens a Checkout Session through the official library; history views.

The fake Stripe records the form-encoded request the library sent, so the tests
check what Stripe would have been asked: the amount in cents as one line item,
the key as ``client_reference_id`` and in metadata, and the return URLs.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.payments.conftest import SECRET_KEY, Shop
from tests.support.portal import PortalServer


def test_a_topup_opens_a_checkout_session(shop: Shop) -> None:
    key_id, key = shop.key("1")
    before = len(shop.stripe.calls("POST", "/v1/checkout/sessions"))

    response = shop.topup(key, "25.50")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"].startswith("cs_test_")
    assert answer["url"] == f"https://checkout.stripe.test/c/pay/{answer['id']}"
    assert (answer["amount"], answer["amount_micros"]) == ("25.500000", 25_500_000)
    assert (answer["status"], answer["currency"], answer["credited_micros"]) == \
        ("created", "usd", 0)
    calls = shop.stripe.calls("POST", "/v1/checkout/sessions")
    assert len(calls) == before + 1
    sent = calls[-1]
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.headers["idempotency-key"].startswith(f"portal-topup-{key_id}-")
    form = sent.form
    assert form["mode"] == "payment"
    assert form["line_items[0][quantity]"] == "1"
    assert form["line_items[0][price_data][unit_amount]"] == "2550"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][price_data][product_data][name]"]
    assert form["client_reference_id"] == str(key_id)
    assert form["metadata[key_id]"] == str(key_id)
    assert form["metadata[key_prefix]"] == key[:14]
    assert form["payment_intent_data[metadata][key_id]"] == str(key_id)
    assert form["success_url"] == ("https://portal.example.com/account?topup=success"
                                   "&session_id={CHECKOUT_SESSION_ID}")
    assert form["cancel_url"] == "https://portal.example.com/account?topup=cancelled"
    payment = shop.payment(answer["id"])
    assert (payment["account_id"], payment["amount"], payment["status"]) == \
        (key_id, 25_500_000, "created")
    assert shop.assert_books_balance(key_id) == 1_000_000  # nothing credited before paying


#: Refused amounts: out of bounds ($5 to $500 here), finer than a cent, not amounts.
BAD_AMOUNTS = ["4.99", "500.01", "-10", "0", "10.001", "abc", "", "NaN", "Infinity", "1e400",
               True, None, ["10"], {"usd": 10}, "9" * 40]


def test_bad_amounts_are_refused_before_stripe(shop: Shop) -> None:
    _key_id, key = shop.key()
    before = (len(shop.stripe.requests), shop.counts()["payments"])
    for amount in BAD_AMOUNTS:
        response = shop.topup(key, amount)
        assert response.status_code == 400, (amount, response.text)
        assert response.json()["error"]["param"] == "amount", amount
    # JSON has no infinity, but Python's parser reads 1e400 as one.
    response = httpx.post(shop.url + "/api/topup", content=b'{"amount": 1e400}',
                          headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert (len(shop.stripe.requests), shop.counts()["payments"]) == before
    for amount in ("5", 500, 12.5, " 42.10 "):
        assert shop.topup(key, amount).status_code == 200, amount


def test_bad_bodies_and_missing_keys_are_refused(shop: Shop) -> None:
    _key_id, key = shop.key()
    auth = {"authorization": f"Bearer {key}"}
    for body in (b"{", b"[1]", b"\xff"):
        response = httpx.post(shop.url + "/api/topup", content=body, headers=auth)
        assert response.status_code == 400, response.text
    assert httpx.post(shop.url + "/api/topup", json={"amount": "10"}).status_code == 401
    assert shop.topup("sk-ip-nothing_" + "x" * 40, "10").status_code == 401


def test_stripe_errors_are_503_or_400_never_500(shop: Shop) -> None:
    _key_id, key = shop.key()
    before = shop.counts()["payments"]
    shop.stripe.fail_next(500, retry=False)
    down = shop.topup(key, "10")
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "payments_unavailable"

    shop.stripe.fail_next(400, error_type="invalid_request_error",
                          message="Amount must convert to at least 50 cents.")
    refused = shop.topup(key, "10")
    assert refused.status_code == 400
    assert "50 cents" in refused.json()["error"]["message"]
    assert shop.counts()["payments"] == before


def test_a_retried_create_makes_one_session(shop: Shop) -> None:
    """The library retries a 500 with the same idempotency key: one session, one payment."""
    _key_id, key = shop.key()
    shop.stripe.fail_next(500, retry=True)
    calls = len(shop.stripe.calls("POST", "/v1/checkout/sessions"))
    response = shop.topup(key, "11")
    assert response.status_code == 200, response.text
    sent = shop.stripe.calls("POST", "/v1/checkout/sessions")[calls:]
    assert len(sent) == 2
    assert sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]


def test_payments_config_is_public(shop: Shop) -> None:
    config = httpx.get(shop.url + "/api/payments/config").json()
    assert config == {"payments_enabled": True, "currency": "usd",
                      "min_amount": "5.000000", "min_amount_micros": 5_000_000,
                      "max_amount": "500.000000", "max_amount_micros": 500_000_000}


def test_a_key_sees_its_own_payments_newest_first(shop: Shop) -> None:
    key_id, key = shop.key()
    _other_id, other = shop.key()
    paid = shop.paid(key, "6.00")
    shop.open_session(other, "7.00")
    pending = shop.open_session(key, "9.00")

    response = httpx.get(shop.url + "/v1/key/payments",
                         headers={"authorization": f"Bearer {key}"})

    assert response.status_code == 200
    data = response.json()["data"]
    assert [p["id"] for p in data] == [pending, paid]
    assert data[0]["status"] == "created" and data[0]["url"].endswith(pending)
    assert data[1]["status"] == "paid" and "url" not in data[1]
    assert (data[1]["paid"], data[1]["credited"], data[1]["debited"]) == \
        ("6.000000", "6.000000", "0.000000")
    assert "key_id" not in data[1]
    assert httpx.get(shop.url + "/v1/key/payments").status_code == 401
    bad = httpx.get(shop.url + "/v1/key/payments?limit=0",
                    headers={"authorization": f"Bearer {key}"})
    assert bad.status_code == 400
    assert shop.assert_books_balance(key_id) == 6_000_000


def test_the_admin_sees_every_payment(shop: Shop) -> None:
    key_id, key = shop.key()
    session_id = shop.paid(key, "5.00")

    assert shop.admin("/admin/payments", token=None).status_code == 401
    assert shop.admin("/admin/payments", token="wrong").status_code == 401
    listed = shop.admin(f"/admin/payments?account_id={key_id}")
    assert listed.status_code == 200
    (row,) = listed.json()["data"]
    assert (row["id"], row["account_id"], row["status"]) == (session_id, key_id, "paid")
    assert row["payment_intent"].startswith("pi_")
    paid = shop.admin("/admin/payments?status=paid&limit=500").json()["data"]
    assert session_id in [p["id"] for p in paid] and {p["status"] for p in paid} == {"paid"}
    assert shop.admin("/admin/payments?status=bogus").status_code == 400
    assert shop.admin("/admin/payments?account_id=x").status_code == 400
    events = shop.admin("/admin/payments/events?limit=5").json()["data"]
    assert events[0]["type"] == "checkout.session.completed"
    assert events[0]["outcome"] == f"credited 5.000000 to account {key_id}"


@pytest.fixture(scope="module")
def unpaid_portal(tmp_path_factory: pytest.TempPathFactory,
                  redis_url: str) -> Iterator[PortalServer]:
    """A portal with no Stripe settings at all."""
    portal = PortalServer(tmp_path_factory.mktemp("nopay"), redis_url, workers=1)
    with portal:
        yield portal


def test_without_stripe_the_portal_runs_and_payments_are_off(
        unpaid_portal: PortalServer) -> None:
    _key_id, key = unpaid_portal.create_key("1")
    auth = {"authorization": f"Bearer {key}"}
    topup = httpx.post(unpaid_portal.url + "/api/topup", json={"amount": "10"}, headers=auth)
    assert topup.status_code == 503
    assert topup.json()["error"]["code"] == "payments_off"
    webhook = httpx.post(unpaid_portal.url + "/webhooks/stripe", content=b"{}",
                         headers={"stripe-signature": "t=1,v1=x"})
    assert webhook.status_code == 503
    config = httpx.get(unpaid_portal.url + "/api/payments/config").json()
    assert config["payments_enabled"] is False
    history = httpx.get(unpaid_portal.url + "/v1/key/payments", headers=auth)
    assert history.status_code == 200 and history.json()["data"] == []
    assert httpx.get(unpaid_portal.url + "/v1/key", headers=auth).status_code == 200


def test_absurd_numbers_are_400s_not_500s(shop: Shop) -> None:
    _key_id, key = shop.key()
    for amount in ("1e999999", "1e-999999", "NaN", "-5", "²"):
        response = shop.topup(key, amount)
        assert response.status_code == 400, (amount, response.text)
    import httpx

    listing = httpx.get(shop.url + "/v1/key/payments?limit=²",
                        headers={"authorization": f"Bearer {key}"})
    assert listing.status_code == 400
