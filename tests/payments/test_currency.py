"""Stripe's zero-, two- and three-decimal rules, applied exactly in both directions.

Balances are micro-units of the configured currency. 5.25 KWD is 5250 fils at
Stripe (thousandths, last digit 0), ¥500 is 500, $12.34 is 1234 and 5 ISK is 500
(two-decimal, whole krónur only). A checkout and its webhook in KWD and in JPY
must credit exactly what was paid; amounts Stripe cannot charge are refused at
start (settings) or before Stripe is asked (a top-up).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from edge.app import create_app
from edge.errors import InvalidRequest
from edge.payments.checkout import check_topup_amount
from edge.payments.config import PaymentSettings
from edge.payments.currency import minor_unit, to_micros, to_minor
from edge.payments.reconcile import _line
from edge.settings import ConfigError, Settings
from tests.payments.conftest import ADMIN, SECRET_KEY, WEBHOOK_SECRET, Shop
from tests.support.fake_stripe import fake_stripe
from tests.support.portal import PortalServer

# -- the table and the conversion -------------------------------------------------------


@pytest.mark.parametrize(("currency", "decimals", "step"), [
    ("usd", 2, 1), ("eur", 2, 1), ("gbp", 2, 1),
    ("jpy", 0, 1), ("krw", 0, 1), ("vnd", 0, 1), ("clp", 0, 1), ("xof", 0, 1),
    ("kwd", 3, 10), ("bhd", 3, 10), ("jod", 3, 10), ("omr", 3, 10), ("tnd", 3, 10),
    ("isk", 2, 100), ("huf", 2, 100), ("twd", 2, 100), ("ugx", 2, 100),
])
def test_stripe_minor_units(currency: str, decimals: int, step: int) -> None:
    unit = minor_unit(currency)
    assert (unit.decimals, unit.step) == (decimals, step)
    assert unit.micros == 10 ** (6 - decimals)
    assert minor_unit(currency.upper()) == unit


@pytest.mark.parametrize(("currency", "micros", "minor"), [
    ("usd", 12_340_000, 1234),  # $12.34
    ("usd", 10_000, 1),  # one cent
    ("jpy", 500_000_000, 500),  # ¥500
    ("jpy", 1_000_000, 1),  # ¥1
    ("kwd", 5_250_000, 5250),  # 5.250 KWD
    ("kwd", 10_000, 10),  # the finest KWD amount Stripe charges: 0.010
    ("isk", 5_000_000, 500),  # 5 ISK
])
def test_amounts_convert_exactly_both_ways(currency: str, micros: int, minor: int) -> None:
    assert to_minor(micros, currency) == minor
    assert to_micros(minor, currency) == micros


@pytest.mark.parametrize(("currency", "micros"), [
    ("usd", 12_345),  # finer than a cent
    ("jpy", 500_500_000),  # ¥500.50: yen have no fractions at Stripe
    ("jpy", 10_000),
    ("kwd", 5_124_000),  # 5.124 KWD: Stripe needs the last digit to be 0
    ("kwd", 1_000),
    ("isk", 5_500_000),  # 5.50 ISK: whole krónur only
    ("huf", 10_000),
])
def test_amounts_stripe_cannot_charge_are_refused(currency: str, micros: int) -> None:
    with pytest.raises(ValueError, match=currency.upper()):
        to_minor(micros, currency)


def test_what_stripe_reports_is_read_exactly_even_off_the_step() -> None:
    """A refund of 5 fils cannot be asked for, but if Stripe says so, it is 5,000 µ."""
    assert to_micros(5, "kwd") == 5_000
    assert to_micros(1, "isk") == 10_000
    assert to_micros(0, "jpy") == 0


@pytest.mark.parametrize("currency", ["usd", "jpy", "kwd", "isk"])
def test_every_chargeable_amount_round_trips(currency: str) -> None:
    step = minor_unit(currency).step_micros
    for multiple in (1, 2, 7, 99, 100, 101, 12_345, 99_999_999):
        assert to_micros(to_minor(multiple * step, currency), currency) == multiple * step


# -- start-up and request checks ----------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"currency": "kwd", "topup_min_usd": "5.005"},
     "PORTAL_TOPUP_MIN_USD must be a positive multiple of 0.01 KWD: Stripe counts kwd in "
     "thousandths ending in 0"),
    ({"currency": "jpy", "topup_min_usd": "5.50"},
     "PORTAL_TOPUP_MIN_USD must be a positive multiple of 1 JPY: Stripe counts jpy in "
     "whole units"),
    ({"currency": "jpy", "topup_max_usd": "999.99"}, "PORTAL_TOPUP_MAX_USD .* 1 JPY"),
    ({"currency": "isk", "topup_min_usd": "10.50"}, "1 ISK: Stripe charges isk in whole"),
    ({"currency": "usd", "topup_min_usd": "5.001"}, "0.01 USD: Stripe counts usd in hundredths"),
    ({"topup_min_usd": "0"}, "PORTAL_TOPUP_MIN_USD must be a positive"),
    ({"currency": "USD"}, "PORTAL_CURRENCY must be a lower-case three-letter ISO code"),
    ({"currency": "us"}, "PORTAL_CURRENCY"),
    ({"currency": "dóm"}, "PORTAL_CURRENCY"),
])
def test_settings_stripe_cannot_charge_are_refused(changes: dict[str, str],
                                                   message: str) -> None:
    settings = Settings(**changes)  # the kernel's settings know nothing of Stripe
    with pytest.raises(ConfigError, match=message):
        PaymentSettings.from_settings(settings)
    with pytest.raises(ConfigError, match=message):  # the app factory refuses to build
        create_app(settings, name=f"refused-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("changes", [
    {"currency": "jpy", "topup_min_usd": "500", "topup_max_usd": "100000"},
    {"currency": "kwd", "topup_min_usd": "5.01", "topup_max_usd": "500.25"},
    {"currency": "isk", "topup_min_usd": "700", "topup_max_usd": "140000"},
    {"currency": "eur"},
])
def test_settings_stripe_can_charge_are_accepted(changes: dict[str, str]) -> None:
    PaymentSettings.from_settings(Settings(**changes))


def payment_settings(currency: str) -> PaymentSettings:
    return PaymentSettings(enabled=True, currency=currency, min_amount=1_000_000,
                           max_amount=1_000_000_000, success_url="s", cancel_url="c")


@pytest.mark.parametrize(("currency", "good", "bad"), [
    ("usd", 12_340_000, 12_345_000),
    ("jpy", 12_000_000, 12_500_000),
    ("kwd", 12_350_000, 12_345_000),
])
def test_a_topup_stripe_cannot_charge_is_refused(currency: str, good: int, bad: int) -> None:
    payments = payment_settings(currency)
    check_topup_amount(good, payments)
    with pytest.raises(InvalidRequest, match=f"multiple of .* {currency.upper()}") as refused:
        check_topup_amount(bad, payments)
    assert refused.value.param == "amount"


@pytest.mark.parametrize(("currency", "total", "paid"), [
    ("usd", 1234, 12_340_000), ("jpy", 500, 500_000_000), ("kwd", 5250, 5_250_000)])
def test_reconcile_reads_what_was_paid_in_the_session_currency(currency: str, total: int,
                                                               paid: int) -> None:
    session = {"payment_status": "paid", "amount_total": total, "currency": currency,
               "metadata": {"key_id": "3"}}
    assert _line("cs_x", session, None, 0).paid == paid
    payment: Any = SimpleNamespace(account_id=3, status="paid", currency=currency)
    line = _line("cs_x", session, payment, paid)
    assert (line.paid, line.problem) == (paid, "")


def test_the_portal_refuses_to_start_with_a_bound_stripe_cannot_charge(
        tmp_path, redis_url: str) -> None:
    portal = PortalServer(tmp_path, redis_url, workers=1, env={
        "PORTAL_CURRENCY": "kwd", "PORTAL_TOPUP_MIN_USD": "5.005"})
    result = portal.cli("serve", check=False)
    assert result.returncode == 2
    assert "PORTAL_TOPUP_MIN_USD must be a positive multiple of 0.01 KWD" in result.stderr


# -- a checkout and its webhook, through the official library -----------------------------

#: Per currency: bounds, a top-up, its Stripe amount and micro-units, an amount
#: finer than Stripe charges, and a partial refund in minor units and micro-units.
CASES: dict[str, dict[str, Any]] = {
    "kwd": {"bounds": ("5", "500"), "amount": "5.25", "minor": 5250, "micros": 5_250_000,
            "too_fine": "5.255", "refund": 1230, "refund_micros": 1_230_000},
    "jpy": {"bounds": ("100", "100000"), "amount": "500", "minor": 500,
            "micros": 500_000_000, "too_fine": "500.5", "refund": 120,
            "refund_micros": 120_000_000},
}


@pytest.fixture(scope="module", params=sorted(CASES))
def foreign_shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 redis_url: str) -> Iterator[Shop]:
    """A portal whose balances and top-ups are in KWD (three-decimal), then JPY (zero)."""
    currency = request.param
    low, high = CASES[currency]["bounds"]
    with fake_stripe(SECRET_KEY) as stripe:
        portal = PortalServer(tmp_path_factory.mktemp(f"shop-{currency}"), redis_url,
                              workers=1, env={
                                  "STRIPE_SECRET_KEY": SECRET_KEY,
                                  "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                  "STRIPE_API_BASE": stripe.url, "PORTAL_ADMIN_TOKEN": ADMIN,
                                  "PORTAL_PUBLIC_URL": "https://portal.example.com",
                                  "PORTAL_CURRENCY": currency,
                                  "PORTAL_TOPUP_MIN_USD": low, "PORTAL_TOPUP_MAX_USD": high})
        with portal:
            yield Shop(portal, node=None, stripe=stripe)  # type: ignore[arg-type]


def test_a_topup_is_charged_and_credited_exactly(foreign_shop: Shop) -> None:
    shop = foreign_shop
    currency = shop.portal.env["PORTAL_CURRENCY"]
    case = CASES[currency]
    key_id, key = shop.key()
    day = "2020-02-20"
    shop.stripe.clock = datetime.fromisoformat(f"{day}T10:00:00+00:00").timestamp()
    try:
        session_id = shop.open_session(key, case["amount"])
    finally:
        shop.stripe.clock = None

    form = shop.stripe.calls("POST", "/v1/checkout/sessions")[-1].form
    assert form["line_items[0][price_data][currency]"] == currency
    assert form["line_items[0][price_data][unit_amount]"] == str(case["minor"])
    assert shop.payment(session_id)["amount"] == case["micros"]

    paid = shop.send("checkout.session.completed", shop.stripe.pay(session_id))
    assert paid.status_code == 200, paid.text
    assert shop.payment(session_id)["paid"] == case["micros"]
    assert shop.assert_books_balance(key_id) == case["micros"]

    refunded = shop.send("charge.refunded", shop.stripe.refund(session_id, case["refund"]))
    assert refunded.status_code == 200, refunded.text
    assert shop.payment(session_id)["refunded"] == case["refund_micros"]
    assert shop.assert_books_balance(key_id) == case["micros"] - case["refund_micros"]

    result = shop.portal.cli("payments", "reconcile", "--day", day, "--json", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)["sessions"]
    assert (row["session"], row["problem"]) == (session_id, "")
    assert row["paid"] == row["credited"] == f"{case['micros'] / 1_000_000:.6f}"


def test_a_topup_finer_than_stripe_charges_is_refused_before_stripe(foreign_shop: Shop) -> None:
    shop = foreign_shop
    currency = shop.portal.env["PORTAL_CURRENCY"]
    _key_id, key = shop.key()
    before = len(shop.stripe.requests)
    response = shop.topup(key, CASES[currency]["too_fine"])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "amount"
    assert currency.upper() in error["message"]
    assert len(shop.stripe.requests) == before
