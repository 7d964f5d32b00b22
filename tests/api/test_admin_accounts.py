"""``/admin/accounts/{id}``: credit and debit with a required note, freeze and unfreeze, and
what the account shows (its live balance, what open calls hold, its keys), in-process.

Every balance change is a ledger row through the one credit function: the books balance
(SQL = the ledger's sum = Redis), a debit never goes below zero, a reference applies once,
and every refusal changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge.billing import credits
from edge.db.models import Account, ApiKey, AuditEntry, LedgerEntry
from tests.support.inprocess import InProcessPortal, NodeDouble, Stall

TOKEN = "accounts-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)


@pytest.fixture(autouse=True)
def drain_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bookkeeper runs beside the in-process portal: a credit drains the stream itself."""
    monkeypatch.setattr(credits, "BOOKKEEPER_GRACE", 0.0)


async def account_of(portal: InProcessPortal, credit: str = "5") -> tuple[int, int, str]:
    """A new account with ``credit`` USD: ``(account id, key id, secret)``."""
    key_id, secret = await portal.create_key(credit)
    return (await ApiKey.get(id=key_id)).account_id, key_id, secret


async def ledger(account_id: int) -> list[tuple[str, int, str, str]]:
    rows = await LedgerEntry.filter(account_id=account_id).order_by("id")
    return [(str(r.kind), r.amount, r.reference, r.note) for r in rows]


async def test_a_credit_and_a_debit_are_ledger_rows_with_their_notes(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    account, key_id, _secret = await account_of(inprocess_portal, "5")
    credited = await http.post(f"/admin/accounts/{account}/credit", headers=ADMIN,
                               json={"usd": "2.5", "note": "invoice 42", "reference": "inv-42"})
    assert credited.status_code == 200, credited.text
    assert {k: credited.json()[k] for k in ("applied", "applied_micros", "duplicate",
                                            "balance_micros")} == {
        "applied": "2.500000", "applied_micros": 2_500_000, "duplicate": False,
        "balance_micros": 7_500_000}

    debited = await http.post(f"/admin/accounts/{account}/debit", headers=ADMIN,
                              json={"usd": 1.25, "note": " chargeback fee ",
                                    "reference": "fee-1"})
    assert debited.status_code == 200, debited.text
    assert {k: debited.json()[k] for k in (
        "applied", "applied_micros", "deferred_micros", "shortfall_micros", "duplicate",
        "balance", "balance_micros")} == {
        "applied": "-1.250000", "applied_micros": -1_250_000, "deferred_micros": 0,
        "shortfall_micros": 0, "duplicate": False, "balance": "6.250000",
        "balance_micros": 6_250_000}
    again = await http.post(f"/admin/accounts/{account}/debit", headers=ADMIN,
                            json={"usd": 1.25, "note": "chargeback fee", "reference": "fee-1"})
    assert (again.json()["duplicate"], again.json()["applied_micros"],
            again.json()["balance_micros"]) == (True, 0, 6_250_000)

    assert (await ledger(account))[1:] == [("topup", 2_500_000, "inv-42", "invoice 42"),
                                           ("adjustment", -1_250_000, "fee-1",
                                            "chargeback fee")]
    assert await inprocess_portal.assert_books_balance(key_id) == 6_250_000
    rows = (await http.get(f"/admin/audit?target=account:{account}",
                           headers=ADMIN)).json()["data"]
    assert [(r["actor"], r["action"]) for r in rows] == [("admin-api", "account.debit"),
                                                         ("admin-api", "account.credit")]
    debit, topup = rows
    assert (topup["before"]["balance_micros"], topup["after"]["balance_micros"],
            topup["after"]["note"], topup["after"]["reference"]) == (
        5_000_000, 7_500_000, "invoice 42", "inv-42")
    assert (debit["before"]["balance_micros"], debit["after"]["balance_micros"],
            debit["after"]["applied"], debit["after"]["note"]) == (
        7_500_000, 6_250_000, "-1.250000", "chargeback fee")


async def test_a_debit_never_takes_the_balance_below_zero(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    account, key_id, _secret = await account_of(inprocess_portal, "3.75")
    taken = (await http.post(f"/admin/accounts/{account}/debit", headers=ADMIN,
                             json={"usd": "10", "note": "written off"})).json()
    assert (taken["applied_micros"], taken["deferred_micros"], taken["shortfall"],
            taken["balance_micros"]) == (-3_750_000, 0, "6.250000", 0)
    (_opening, (kind, amount, reference, note)) = await ledger(account)
    assert (kind, amount, note) == ("adjustment", -3_750_000,
                                    "written off (asked -10000000, balance allowed -3750000)")
    assert reference.startswith("adjustment:")  # a reference of its own
    assert await inprocess_portal.assert_books_balance(key_id) == 0


async def test_a_debit_while_a_call_holds_credit_defers_what_it_holds(
        inprocess_portal: InProcessPortal,
        node_doubles: Callable[..., Awaitable[NodeDouble]]) -> None:
    portal, http = inprocess_portal, inprocess_portal.client
    await portal.add_model("m1", served_name="sim-m1")
    node = await node_doubles("sim-m1")
    await portal.add_node("m1", node)
    account, key_id, secret = await account_of(portal, "1")
    node.script(Stall())
    call = asyncio.create_task(portal.chat(secret, "m1", max_tokens=16))
    shown: dict[str, Any] = {}
    for _ in range(500):
        shown = (await http.get(f"/admin/accounts/{account}", headers=ADMIN)).json()
        if shown["reserved_micros"]:
            break
        await asyncio.sleep(0.01)
    held = shown["reserved_micros"]
    assert 0 < held < 1_000_000 and shown["balance_micros"] == 1_000_000 - held

    taken = (await http.post(f"/admin/accounts/{account}/debit", headers=ADMIN,
                             json={"usd": "1", "note": "card fraud"})).json()
    assert (taken["applied_micros"], taken["deferred_micros"], taken["shortfall_micros"]) == (
        -(1_000_000 - held), held, 0)
    assert taken["balance_micros"] == 0
    node.release()
    answered = await call
    assert answered.status_code == 200, answered.text
    await portal.wait_settled()
    assert await portal.assert_books_balance(key_id) == 0  # the call's release paid the rest
    assert (await Account.get(id=account)).owed == 0


@pytest.mark.parametrize("path", ["credit", "debit"])
@pytest.mark.parametrize(("body", "param"), [
    ({"usd": "1"}, "note"),
    ({"usd": "1", "note": ""}, "note"),
    ({"usd": "1", "note": "   "}, "note"),
    ({"usd": "1", "note": 42}, "note"),
    ({"usd": "1", "note": "x" * 501}, "note"),
    ({"note": "why"}, "usd"),
    ({"usd": "0", "note": "why"}, "usd"),
    ({"usd": "-1", "note": "why"}, "usd"),
    ({"usd": "abc", "note": "why"}, "usd"),
    ({"usd": "0.0000001", "note": "why"}, "usd"),
    ({"usd": "1000000.01", "note": "why"}, "usd"),
    ({"usd": "1e30", "note": "why"}, "usd"),
    ({"usd": True, "note": "why"}, "usd"),
    ({"usd": "1", "note": "why", "reference": ""}, "reference"),
    ({"usd": "1", "note": "why", "reference": 5}, "reference"),
    ({"usd": "1", "note": "why", "reference": "r" * 201}, "reference"),
])
async def test_a_bad_credit_or_debit_is_refused_and_changes_nothing(
        inprocess_portal: InProcessPortal, path: str, body: dict, param: str) -> None:
    account, key_id, _secret = await account_of(inprocess_portal, "5")
    refused = await inprocess_portal.client.post(f"/admin/accounts/{account}/{path}",
                                                 json=body, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert len(await ledger(account)) == 1  # the opening credit alone
    assert await inprocess_portal.assert_books_balance(key_id) == 5_000_000
    assert not await AuditEntry.exists()


async def test_freezing_refuses_the_keys_until_unfrozen(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    account, _key_id, secret = await account_of(inprocess_portal, "5")
    caller = {"authorization": f"Bearer {secret}"}
    frozen = await http.post(f"/admin/accounts/{account}/freeze", headers=ADMIN,
                             json={"note": "abuse report 7"})
    assert frozen.status_code == 200, frozen.text
    assert (frozen.json()["frozen"], frozen.json()["open_disputes"]) == (True, 0)
    assert (await Account.get(id=account)).frozen
    assert (await http.get("/v1/key", headers=caller)).status_code == 403
    again = await http.post(f"/admin/accounts/{account}/freeze", headers=ADMIN)
    assert again.status_code == 200 and again.json()["frozen"]  # already: no new row

    thawed = await http.post(f"/admin/accounts/{account}/unfreeze", headers=ADMIN)
    assert thawed.status_code == 200 and thawed.json()["frozen"] is False
    assert (await http.get("/v1/key", headers=caller)).status_code == 200
    rows = (await http.get(f"/admin/audit?target=account:{account}",
                           headers=ADMIN)).json()["data"]
    assert [(r["action"], r["before"]["frozen"], r["after"]["frozen"], r["after"]["note"])
            for r in rows] == [("account.unfreeze", True, False, ""),
                               ("account.freeze", False, True, "abuse report 7")]

    for body in ({"note": 7}, {"note": ""}, [1]):
        refused = await http.post(f"/admin/accounts/{account}/freeze", json=body,
                                  headers=ADMIN)
        assert refused.status_code == 400, refused.text
    assert not (await Account.get(id=account)).frozen


async def test_the_account_shows_its_money_and_its_keys(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    made = (await http.post("/admin/keys", headers=ADMIN,
                            json={"name": "acme", "credit": "5"})).json()
    await http.post("/admin/keys", headers=ADMIN, json={
        "name": "ci", "account": made["account"], "scope": "api", "rpm": 7, "tpm": 9000,
        "cap": "2", "cap_reset": "daily", "models": None})
    shown = (await http.get(f"/admin/accounts/{made['account']}", headers=ADMIN)).json()
    assert {k: shown[k] for k in ("name", "balance", "balance_micros", "spent_micros",
                                  "reserved_micros", "owed_micros", "frozen",
                                  "open_disputes")} == {
        "name": "acme", "balance": "5.000000", "balance_micros": 5_000_000,
        "spent_micros": 0, "reserved_micros": 0, "owed_micros": 0, "frozen": False,
        "open_disputes": 0}
    assert [(k["name"], k["scope"], k["limits"], k["cap"], k["cap_reset"])
            for k in shown["keys"]] == [
        ("acme", "manage", {"requests_per_minute": inprocess_portal.settings.default_rpm,
                            "tokens_per_minute": inprocess_portal.settings.default_tpm},
         None, "never"),
        ("ci", "api", {"requests_per_minute": 7, "tokens_per_minute": 9000}, "2.000000",
         "daily")]


async def test_unknown_accounts_and_a_missing_token(inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    account, key_id, _secret = await account_of(inprocess_portal, "5")
    body = {"usd": "1", "note": "why"}
    for action in ("credit", "debit", "freeze", "unfreeze"):
        missing = await http.post(f"/admin/accounts/999999/{action}", json=body,
                                  headers=ADMIN)
        assert missing.status_code == 404, action
        refused = await http.post(f"/admin/accounts/{account}/{action}", json=body)
        assert refused.status_code == 401, action
        wrong = await http.post(f"/admin/accounts/{account}/{action}", json=body,
                                headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401, action
    assert await inprocess_portal.assert_books_balance(key_id) == 5_000_000
    assert not (await Account.get(id=account)).frozen and not await AuditEntry.exists()


async def test_the_account_search_is_the_consoles_and_shows_live_balances(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    account, _key = await inprocess_portal.create_key("3")
    await inprocess_portal.ctx.store.client.set(inprocess_portal.ctx.store.balance(account),
                                                2_500_000)  # as if a call held 0.50
    found = await http.get("/admin/accounts", params={"q": str(account)}, headers=ADMIN)
    assert found.status_code == 200
    (row,) = [a for a in found.json()["data"] if a["id"] == account]
    assert row["balance_micros"] == 2_500_000  # live, not SQL's 3.00
    for hostile in ("\x00", "%", "_", "'; drop table accounts; --", "x" * 5000):
        answer = await http.get("/admin/accounts", params={"q": hostile}, headers=ADMIN)
        assert answer.status_code == 200, hostile
        assert account not in [a["id"] for a in answer.json()["data"]]
    for limit in ("0", "501", "ten", "-1"):
        refused = await http.get("/admin/accounts", params={"limit": limit}, headers=ADMIN)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "limit"
