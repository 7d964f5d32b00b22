"""The console's accounts and models pages, in process: they show what the database
holds (the live balance, keys with their settings, the ledger, every model with its
prices and policy), the search matches as ``GET /admin/accounts`` does, an unknown
account is a 404 page, and no query string makes them fail."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest

from edge.billing.credits import credit
from edge.db.models import Account, LedgerKind
from tests.console.test_console_auth import TOKEN, sign_in
from tests.support.inprocess import InProcessPortal

pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)

BEARER = {"authorization": f"Bearer {TOKEN}"}


async def make_key(portal: InProcessPortal, **body: Any) -> dict[str, Any]:
    """A key made through the admin API (a new account unless ``account`` is given)."""
    made = await portal.client.post("/admin/keys", json=body, headers=BEARER)
    assert made.status_code == 201, made.text
    key: dict[str, Any] = made.json()
    return key


async def page(portal: InProcessPortal, path: str, **params: str) -> httpx.Response:
    answer = await portal.client.get(path, params=params)
    assert answer.status_code == 200, (path, params, answer.status_code, answer.text[:300])
    return answer


def listed(answer: httpx.Response) -> list[int]:
    """The account ids in the accounts page's table, in order."""
    return [int(found) for found in re.findall(r'<tr data-account="(\d+)"', answer.text)]


async def test_the_accounts_page_shows_and_searches_what_the_database_holds(
        inprocess_portal: InProcessPortal) -> None:
    portal = inprocess_portal
    acme = await make_key(portal, name="Acme Robotics", credit="12.50")
    globex = await make_key(portal, name="Globex", credit="3")
    other = await make_key(portal, name="Initech 100%_off", credit="0")
    await Account.filter(id=globex["account"]).update(frozen=True, spent=1_250_000)
    await sign_in(portal)

    everyone = await page(portal, "/admin/console/accounts")
    assert listed(everyone) == [acme["account"], globex["account"], other["account"]]
    row = re.search(rf'<tr data-account="{globex["account"]}">(.*?)</tr>', everyone.text, re.S)
    assert row is not None
    assert "Globex" in row.group(1) and "3.000000" in row.group(1)
    assert "1.250000" in row.group(1) and "frozen" in row.group(1)
    assert everyone.headers["cache-control"] == "no-store"

    # The balance shown is the live one (Redis), not SQL's until the bookkeeper runs.
    await credit(acme["account"], 500_000, kind=LedgerKind.TOPUP, note="t",
                 store=portal.ctx.store)
    assert "13.000000" in (await page(portal, "/admin/console/accounts", q="acme")).text

    searches = {"acme": [acme["account"]], "ROBOT": [acme["account"]],
                str(globex["account"]): [globex["account"]],
                globex["prefix"][:12]: [globex["account"]], acme["prefix"]: [acme["account"]],
                "100%_": [other["account"]], "%": [other["account"]], "_": [other["account"]],
                "%%": [], "nobody": [], "  globex  ": [globex["account"]]}
    for search, wanted in searches.items():
        shown = await page(portal, "/admin/console/accounts", q=search)
        assert listed(shown) == wanted, search
        # The same matching as the admin API's.
        api = await portal.client.get("/admin/accounts", params={"q": search}, headers=BEARER)
        assert [a["id"] for a in api.json()["data"]] == wanted, search
    # A prefix's start shared by every key matches them all; limit cuts the list.
    assert len(listed(await page(portal, "/admin/console/accounts", q="sk-"))) == 3
    assert len(listed(await page(portal, "/admin/console/accounts", limit="2"))) == 2
    assert "No account matches" in (await page(portal, "/admin/console/accounts",
                                               q="nobody")).text


async def test_an_account_page_shows_its_balance_keys_and_ledger_with_their_forms(
        inprocess_portal: InProcessPortal) -> None:
    portal = inprocess_portal
    await portal.add_model("m1")
    first = await make_key(portal, name="Umbrella", credit="20")
    account = first["account"]
    scoped = await make_key(portal, account=account, name="batch job", models=["m1"],
                            routes=["chat"], rpm=7, tpm=7000, cap="2.50", cap_reset="daily",
                            expires_at="2031-05-06T07:08:09+00:00")
    gone = await make_key(portal, account=account, name="old laptop")
    assert (await portal.client.post(f"/admin/keys/{gone['id']}/revoke",
                                     headers=BEARER)).status_code == 200
    topped = await portal.client.post(f"/admin/accounts/{account}/credit", headers=BEARER,
                                      json={"usd": "1.25", "note": "goodwill <b>credit</b>"})
    assert topped.status_code == 200, topped.text
    await portal.drain_ledger()
    await sign_in(portal)

    shown = (await page(portal, f"/admin/console/accounts/{account}")).text
    assert "Account" in shown and "Umbrella" in shown
    assert re.search(r'id="balance">\$21\.250000<', shown)
    assert re.search(r'id="reserved">\$0\.000000<', shown) and 'id="disputes"' not in shown
    assert f'href="/admin/console/ledger?account={account}"' in shown

    keys = {int(m.group(1)): m.group(2)
            for m in re.finditer(r'<tr data-key="(\d+)">(.*?)</tr>', shown, re.S)}
    assert set(keys) == {first["id"], scoped["id"], gone["id"]}
    assert "manage" in keys[first["id"]] and "all" in keys[first["id"]]
    batch = keys[scoped["id"]]
    for expected in ("batch job", scoped["prefix"], ">api<", ">m1<", ">chat<", ">7<",
                     ">7000<", "2.500000", "daily", "2031-05-06 07:08:09", "live"):
        assert expected in batch, expected
    assert "revoked" in keys[gone["id"]] and "/revoke" not in keys[gone["id"]]
    assert f'data-api="/admin/keys/{scoped["id"]}/revoke"' in batch

    # The ledger rows, newest first, with the note (escaped).
    ledger = re.findall(r'<tr data-entry="\d+">(.*?)</tr>', shown, re.S)
    assert len(ledger) == 2
    assert "1.250000" in ledger[0] and "goodwill &lt;b&gt;credit&lt;/b&gt;" in ledger[0]
    assert "20.000000" in ledger[1]

    # Every action is a form to the admin API; notes are required.
    for route in (f"/admin/accounts/{account}/credit", f"/admin/accounts/{account}/debit",
                  f"/admin/accounts/{account}/freeze", "/admin/keys",
                  f"/admin/keys/{scoped['id']}"):
        assert f'data-api="{route}"' in shown, route
    for form in ("credit", "debit"):
        found = re.search(rf'<form[^>]*id="{form}".*?</form>', shown, re.S)
        assert found is not None and re.search(r'name="note" required', found.group(0))
    assert 'data-reveal="key"' in shown and 'id="reveal"' in shown
    assert f'data-api="/admin/keys/{gone["id"]}"' not in shown  # no limits for a revoked key
    assert 'style=' not in shown and "onclick" not in shown

    await Account.filter(id=account).update(frozen=True)
    frozen = (await page(portal, f"/admin/console/accounts/{account}")).text
    assert f'data-api="/admin/accounts/{account}/unfreeze"' in frozen
    assert f'data-api="/admin/accounts/{account}/freeze"' not in frozen


async def test_an_unknown_account_is_a_404_page(inprocess_portal: InProcessPortal) -> None:
    await sign_in(inprocess_portal)
    for account in ("999", "0", "-3", str(2**63), "9" * 40):
        answer = await inprocess_portal.client.get(f"/admin/console/accounts/{account}")
        assert answer.status_code == 404, account
        if answer.headers["content-type"].startswith("text/html"):
            assert "No account" in answer.text or "404" in answer.text
    page_404 = await inprocess_portal.client.get("/admin/console/accounts/999")
    assert "No account 999." in page_404.text and "<nav" in page_404.text


async def test_the_models_page_shows_every_model_its_nodes_and_policy(
        inprocess_portal: InProcessPortal) -> None:
    portal = inprocess_portal
    await portal.add_model("alpha", served_name="org/alpha-7b", input_price="0.25",
                           output_price="2", context=32768)
    await portal.add_model("beta/embed", kind="embed", input_price="0.01", output_price="0")
    await portal.add_node("alpha", "http://127.0.0.1:9", state="running")
    await portal.add_node("alpha", "http://127.0.0.1:10", state="running", healthy=False)
    await portal.add_node("alpha", "http://127.0.0.1:11", state="stopped")
    changed = await portal.client.patch("/admin/models/beta/embed", headers=BEARER,
                                        json={"enabled": False})
    assert changed.status_code == 200, changed.text
    policy = await portal.client.patch("/admin/models/alpha/policy", headers=BEARER,
                                       json={"max_nodes": 4, "target_load": 6.5})
    assert policy.status_code == 200, policy.text
    await portal.ctx.registry.reload()
    await sign_in(portal)

    shown = (await page(portal, "/admin/console/models")).text
    rows = {m.group(1): m.group(2)
            for m in re.finditer(r'<tr data-model="([^"]+)">(.*?)</tr>', shown, re.S)}
    assert set(rows) == {"alpha", "beta/embed"}
    alpha = rows["alpha"]
    for expected in ("org/alpha-7b", "generate", "0.250000", "2.000000", "32,768", "enabled",
                     "1 running", "1 unhealthy", "1 stopped", "0–4 nodes", "target 6.5"):
        assert expected in alpha, expected
    assert "disabled" in rows["beta/embed"] and "embed" in rows["beta/embed"]
    # The forms: the catalogue, the policy (prefilled), and adding a model.
    assert 'data-api="/admin/models/alpha" data-method="PATCH"' in shown
    assert 'data-api="/admin/models/beta/embed" data-method="PATCH"' in shown
    assert 'data-api="/admin/models/alpha/policy" data-method="PATCH"' in shown
    assert re.search(r'name="max_nodes"[^>]*value="4"', shown)
    assert 'data-api="/admin/models"' in shown
    assert 'style=' not in shown and "onclick" not in shown


@pytest.mark.parametrize("query", [
    "q=%00", "q=%27%20OR%201%3D1--", "q=%3Cscript%3Ealert(1)%3C/script%3E", "q=" + "x" * 5000,
    "q=%E2%80%AE%F0%9F%92%A5", "q=%ff%fe", "q=" + "9" * 30, "q=%5C%25%5F",
    "limit=-1", "limit=abc", "limit=99999999999", "limit=0", "q=a&q=b&limit=1&limit=x",
    "q=sk-ip-%00", "%zz=1", "q[]=1&q[x]=2",
])
async def test_hostile_query_strings_never_fail_the_pages(
        inprocess_portal: InProcessPortal, query: str) -> None:
    await make_key(inprocess_portal, name="someone", credit="1")
    await sign_in(inprocess_portal)
    for path in ("/admin/console/accounts", "/admin/console/models"):
        answer = await inprocess_portal.client.get(f"{path}?{query}")
        assert answer.status_code == 200, (path, query, answer.text[:300])
        assert "<script>alert" not in answer.text
    answer = await inprocess_portal.client.get("/admin/console/accounts?"
                                               "q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert html.escape("<script>alert(1)</script>") in answer.text
