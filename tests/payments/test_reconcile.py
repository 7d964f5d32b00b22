"""``portal payments reconcile``: a day of Stripe sessions against the ledger, and fixes.

The fake Stripe dates this test's sessions on a day of their own, so sessions
made by other tests (today) stay out of the comparison.
"""

from __future__ import annotations

import json
from datetime import datetime

from tests.payments.conftest import Shop, until

DAY = "2020-01-15"


def reconcile(shop: Shop, *args: str, day: str = DAY) -> tuple[int, dict]:
    result = shop.portal.cli("payments", "reconcile", "--day", day, "--json", *args,
                             check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def paid_on(shop: Shop, key: str, day: str, amount: str) -> str:
    """A top-up paid and credited, dated ``day`` by the fake Stripe."""
    shop.stripe.clock = datetime.fromisoformat(f"{day}T10:00:00+00:00").timestamp()
    try:
        return shop.paid(key, amount)
    finally:
        shop.stripe.clock = None


def test_reconcile_finds_and_fixes_what_the_webhook_missed(shop: Shop) -> None:
    key_id, key = shop.key()
    shop.stripe.clock = datetime.fromisoformat(f"{DAY}T10:00:00+00:00").timestamp()
    try:
        credited = shop.paid(key, "6.00")
        missed = shop.open_session(key, "7.00")
        shop.stripe.pay(missed)  # paid, but the webhook never arrived
        abandoned = shop.open_session(key, "8.00")
        wrongly = shop.paid(key, "9.00")
        shop.stripe.sessions[wrongly]["payment_status"] = "unpaid"  # books out of line
        foreign = shop.stripe.foreign_session(1234)
    finally:
        shop.stripe.clock = None

    status, report = reconcile(shop)

    assert status == 1
    problems = {row["session"]: row["problem"] for row in report["sessions"]}
    assert problems == {credited: "", missed: "not credited", abandoned: "",
                        wrongly: "credited but not paid"}
    assert foreign not in problems
    assert (report["differences"], report["paid"], report["credited"]) == \
        (2, "13.000000", "15.000000")
    assert shop.assert_books_balance(key_id) == 15_000_000

    status, fixed = reconcile(shop, "--apply")

    assert status == 1  # the credit without a payment is for a person to look into
    assert fixed["applied"] == [f"{missed}: credited 7.000000 to account {key_id}"]
    assert fixed["differences"] == 1
    assert shop.payment(missed)["status"] == "paid"
    assert shop.assert_books_balance(key_id) == 22_000_000
    _status, again = reconcile(shop, "--apply")
    assert again["applied"] == []
    assert shop.assert_books_balance(key_id) == 22_000_000

    table = shop.portal.cli("payments", "reconcile", "--day", DAY, check=False)
    assert table.returncode == 1
    assert "credited but not paid" in table.stdout and "1 difference(s)" in table.stdout


def test_reconcile_matches_each_refund_with_its_debit(shop: Shop) -> None:
    day = "2020-02-20"
    key_id, key = shop.key()
    session_id = paid_on(shop, key, day, "10.00")
    delivered = shop.stripe.refund(session_id, 100)  # $1 back, its webhook arrives
    assert shop.send("charge.refunded", delivered).status_code == 200
    pending = shop.stripe.refund(session_id, 200)  # $2, debited while pending ...
    pending["refunds"]["data"][0]["status"] = "pending"
    assert shop.send("charge.refunded", pending).status_code == 200
    failed_id = pending["refunds"]["data"][0]["id"]
    shop.stripe.charges[session_id]["refunds"]["data"][0]["status"] = "failed"  # ... then not
    missed = shop.stripe.refund(session_id, 300)  # $3 whose webhook never came
    missed_id = missed["refunds"]["data"][0]["id"]
    assert shop.assert_books_balance(key_id) == 7_000_000

    status, report = reconcile(shop, day=day)

    assert status == 1
    (line,) = report["sessions"]
    assert set(line["problem"].split("; ")) == {f"refund {failed_id} failed, not given back",
                                                f"refund {missed_id} not taken back"}
    assert (line["refunded"], line["taken back"]) == ("4.000000", "3.000000")

    status, fixed = reconcile(shop, "--apply", day=day)

    assert status == 0, fixed
    assert len(fixed["applied"]) == 2
    (line,) = fixed["sessions"]
    assert (line["problem"], line["refunded"], line["taken back"]) == ("", "4.000000", "4.000000")
    assert shop.assert_books_balance(key_id) == 6_000_000
    payment = shop.payment(session_id)
    assert (payment["status"], payment["refunded"]) == ("partially_refunded", 4_000_000)
    again_status, again = reconcile(shop, "--apply", day=day)
    assert (again_status, again["applied"]) == (0, [])
    assert shop.assert_books_balance(key_id) == 6_000_000


def test_reconcile_apply_asks_stripe_again_before_taking_a_refund_back(shop: Shop) -> None:
    """A refund listed as pending may fail before --apply: then nothing is taken."""
    day = "2020-03-03"
    key_id, key = shop.key()
    session_id = paid_on(shop, key, day, "10.00")
    refund = shop.stripe.refund(session_id, 500)["refunds"]["data"][0]
    refund["status"] = "pending"
    # Listed as pending, failed by the time --apply fetches it (its refund.failed
    # found nothing to give back, and nothing must be taken now).
    shop.stripe.refund_later[refund["id"]] = {"status": "failed"}

    _status, fixed = reconcile(shop, "--apply", day=day)

    assert fixed["applied"] == [f"{session_id}: refund {refund['id']} is failed now; "
                                "nothing taken"]
    assert shop.assert_books_balance(key_id) == 10_000_000


def test_a_refund_of_a_top_up_never_credited_takes_nothing(shop: Shop) -> None:
    """Paid in another currency (refused at completion), then refunded: the key's
    other credit is untouched, by the webhook and by reconcile --apply."""
    day = "2020-04-04"
    key_id, key = shop.key()
    kept = shop.paid(key, "5.00")
    shop.stripe.clock = datetime.fromisoformat(f"{day}T10:00:00+00:00").timestamp()
    try:
        refused = shop.open_session(key, "8.00")
    finally:
        shop.stripe.clock = None
    shop.stripe.sessions[refused]["currency"] = "eur"
    completed = shop.send("checkout.session.completed", shop.stripe.pay(refused))
    assert "ignored: paid in 'eur'" in completed.json()["outcome"]
    charge = shop.stripe.refund(refused, 800)
    refunded = shop.send("charge.refunded", charge)
    assert "never credited" in refunded.json()["outcome"], refunded.text
    assert shop.assert_books_balance(key_id) == 5_000_000

    _status, fixed = reconcile(shop, "--apply", day=day)
    assert shop.assert_books_balance(key_id) == 5_000_000
    assert shop.payment(kept)["status"] == "paid"
    assert not any("took back" in outcome for outcome in fixed["applied"])


def test_payments_list_and_unfreeze_from_the_cli(shop: Shop) -> None:
    key_id, key = shop.key()
    session_id = shop.paid(key, "5.00")
    listed = shop.portal.cli_json("payments", "list", "--account", str(key_id))
    assert [(p["id"], p["status"], p["credited"]) for p in listed] == \
        [(session_id, "paid", "5.000000")]

    shop.send("charge.dispute.created", shop.stripe.dispute(session_id))
    assert shop.sql("SELECT frozen FROM accounts WHERE id=?", key_id)[0][0]
    assert until(lambda: shop.topup(key, "5").status_code == 403)
    shop.portal.cli("payments", "unfreeze", str(key_id))
    assert not shop.sql("SELECT frozen FROM accounts WHERE id=?", key_id)[0][0]
    assert until(lambda: shop.topup(key, "5").status_code == 200, timeout=1.0)


def test_reconcile_refuses_a_bad_day(shop: Shop) -> None:
    result = shop.portal.cli("payments", "reconcile", "--day", "yesterday", check=False)
    assert result.returncode == 2 and "not a day" in result.stderr
