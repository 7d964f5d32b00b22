"""The console's accounts and models pages in Chromium: a credit and a debit with their
notes land in the ledger and in the audit log as the console's; freezing refuses the
account's keys on every worker and unfreezing lets them call again; a key's limits, a
new key shown once, a revocation; a price changed on the models page is what every
worker's ``/v1/models`` answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.console.conftest import ADMIN, artifacts
from tests.support.deployment import Deployment


def admin(deployment: Deployment, method: str, path: str, **options: Any) -> Any:
    answer = httpx.request(method, deployment.url + path, headers=ADMIN, timeout=10, **options)
    assert answer.status_code < 300, (path, answer.status_code, answer.text)
    return answer.json()


def new_account(deployment: Deployment, name: str, credit: str = "5") -> dict[str, Any]:
    """A new account with its first key (``key``: the secret) through the admin API."""
    made: dict[str, Any] = admin(deployment, "POST", "/admin/keys",
                                 json={"name": name, "credit": credit})
    return made


def audited(deployment: Deployment, action: str, target: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = admin(deployment, "GET", "/admin/audit",
                                       params={"action": action, "target": target})["data"]
    return rows


def ledger(deployment: Deployment, account: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = admin(deployment, "GET", "/admin/ledger",
                                       params={"account": str(account)})["data"]
    return rows


def eventually(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def always(check: Callable[[], bool], times: int = 8) -> bool:
    """``check`` holds on ``times`` calls in a row (both workers answer, in turn)."""
    return all(check() for _ in range(times))


def submit(page: Any, form: str, done: str, *, confirm: bool = True) -> None:
    """Send a form of the page, confirm it in the dialog, and wait for its message."""
    page.click(f"{form} button[type=submit]")
    if confirm:
        page.locator("dialog#confirm button#confirm-ok").click()
    page.wait_for_selector(f"#flash:not(.error):has-text('{done}')")


def test_a_credit_with_its_note_reaches_the_ledger_and_the_audit_log(
        console_page: Any, console_deployment: Deployment) -> None:
    page, deployment = console_page, console_deployment
    account = new_account(deployment, "Credit Co")["account"]
    page.goto(f"{deployment.url}/admin/console/accounts?q=credit+co")
    page.click(f"tr[data-account='{account}'] a >> nth=0")
    page.wait_for_url(f"**/admin/console/accounts/{account}")
    assert page.inner_text("#balance") == "$5.000000"

    # Cancelled at the dialog: nothing is credited.
    page.fill("#credit input[name=usd]", "2.50")
    page.fill("#credit input[name=note]", "goodwill: the outage of 3 May")
    page.click("#credit button[type=submit]")
    dialog = page.locator("dialog#confirm")
    assert f"Credit account {account}" in dialog.inner_text()
    dialog.locator("button[value=cancel]").click()
    assert audited(deployment, "account.credit", f"account:{account}") == []

    page.click("#credit button[type=submit]")
    dialog.locator("button#confirm-ok").click()
    page.wait_for_selector(f"#flash:has-text('Account {account} credited.')")
    assert page.inner_text("#balance") == "$7.500000"
    assert "goodwill: the outage of 3 May" in page.inner_text("#ledger")
    page.screenshot(path=str(artifacts("console-account.png")), full_page=True)

    (row,) = [r for r in ledger(deployment, account)
              if r["note"] == "goodwill: the outage of 3 May"]
    assert row["amount"] == "2.500000" and row["kind"] == "topup"
    (entry,) = audited(deployment, "account.credit", f"account:{account}")
    assert entry["actor"].startswith("console:")
    assert entry["after"]["note"] == "goodwill: the outage of 3 May"
    assert entry["after"]["balance"] == "7.500000"
    # The account page links to its ledger on the ledger page, where the note is too.
    link = f"/admin/console/ledger?account={account}"
    assert page.locator(f"a[href='{link}']").count() == 1
    page.click(f"a[href='{link}']")
    page.wait_for_url(deployment.url + link)
    assert "goodwill: the outage of 3 May" in page.inner_text("main")


def test_a_debit_then_freezing_and_unfreezing_the_account(
        console_page: Any, console_deployment: Deployment) -> None:
    page, deployment = console_page, console_deployment
    made = new_account(deployment, "Debit Ltd", credit="4")
    account, secret = made["account"], made["key"]
    page.goto(f"{deployment.url}/admin/console/accounts/{account}")

    page.fill("#debit input[name=usd]", "1.25")
    page.fill("#debit input[name=note]", "chargeback fee")
    submit(page, "#debit", f"Account {account} debited.")
    assert page.inner_text("#balance") == "$2.750000"
    (row,) = [r for r in ledger(deployment, account) if r["note"] == "chargeback fee"]
    assert row["amount"] == "-1.250000"
    (entry,) = audited(deployment, "account.debit", f"account:{account}")
    assert entry["actor"].startswith("console:") and entry["after"]["note"] == "chargeback fee"

    def refused() -> bool:
        answer = httpx.post(deployment.url + "/v1/chat/completions", timeout=10,
                            headers={"authorization": f"Bearer {secret}"},
                            json={"model": "m1", "max_tokens": 1,
                                  "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code in (200, 403), answer.text
        return answer.status_code == 403

    assert not refused()
    page.fill("#freeze input[name=note]", "fraud review")
    submit(page, "#freeze", f"Account {account} frozen.")
    assert "frozen" in page.inner_text("#state") and page.is_visible("#unfreeze")
    eventually(lambda: always(refused), "the frozen account's key refused on every worker")
    (entry,) = audited(deployment, "account.freeze", f"account:{account}")
    assert entry["actor"].startswith("console:") and entry["after"]["frozen"] is True

    submit(page, "#unfreeze", f"Account {account} unfrozen.")
    assert "active" in page.inner_text("#state") and page.is_visible("#freeze")
    eventually(lambda: always(lambda: not refused()), "the key calls again on every worker")
    assert audited(deployment, "account.unfreeze", f"account:{account}")


def test_a_keys_limits_a_new_key_shown_once_and_a_revocation(
        console_page: Any, console_deployment: Deployment) -> None:
    page, deployment = console_page, console_deployment
    made = new_account(deployment, "Keys Inc")
    account, first = made["account"], made["id"]
    page.goto(f"{deployment.url}/admin/console/accounts/{account}")

    page.click(f"#limits-{first} summary")
    form = f"#limits-{first} form[data-method=PATCH]"
    page.fill(f"{form} input[name=rpm]", "42")
    page.fill(f"{form} input[name=cap]", "3.25")
    page.select_option(f"{form} select[name=cap_reset]", "weekly")
    page.fill(f"{form} input[name=models]", "m1")
    submit(page, form, f"Key {first} changed.", confirm=False)
    key = admin(deployment, "GET", f"/admin/keys/{first}")
    assert key["limits"]["requests_per_minute"] == 42 and key["cap"] == "3.250000"
    assert key["cap_reset"] == "weekly" and key["models"] == ["m1"]
    assert "weekly" in page.inner_text(f"tr[data-key='{first}']")

    page.fill("#make-key input[name=name]", "ci runner")
    submit(page, "#make-key", "Key made", confirm=False)
    secret = page.inner_text("#reveal code")
    assert secret.startswith("sk-") and page.is_visible("#reveal")
    answer = httpx.get(deployment.url + "/v1/key", timeout=10,
                       headers={"authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    page.reload()
    (new,) = [k for k in admin(deployment, "GET", f"/admin/accounts/{account}")["keys"]
              if k["name"] == "ci runner"]
    assert secret not in page.content()  # shown once: never again on the page

    page.click(f"tr[data-key='{new['id']}'] button[data-action=revoke]")
    assert f"Revoke key {new['id']}" in page.inner_text("dialog#confirm")
    page.locator("dialog#confirm button#confirm-ok").click()
    page.wait_for_selector(f"#flash:has-text('Key {new['id']} revoked.')")
    assert "revoked" in page.inner_text(f"tr[data-key='{new['id']}']")
    assert admin(deployment, "GET", f"/admin/keys/{new['id']}")["revoked"] is True
    (entry,) = audited(deployment, "key.revoke", f"key:{new['id']}")
    assert entry["actor"].startswith("console:")


def test_a_price_changed_on_the_models_page_is_what_v1_models_answers(
        console_page: Any, console_deployment: Deployment) -> None:
    page, deployment = console_page, console_deployment
    page.goto(f"{deployment.url}/admin/console/models")
    row = page.locator("tr[data-model='m1']")
    assert row.locator("[data-price=input]").inner_text() == "0.500000"

    page.click("details[data-model='m1'] summary")
    form = "details[data-model='m1'] form.catalogue"
    page.fill(f"{form} input[name=input_price]", "0.75")
    page.fill(f"{form} input[name=output_price]", "2.125")
    submit(page, form, "m1 changed.")
    assert row.locator("[data-price=input]").inner_text() == "0.750000"
    page.screenshot(path=str(artifacts("console-models.png")), full_page=True)

    def priced() -> bool:
        models = httpx.get(deployment.url + "/v1/models", timeout=10).json()["data"]
        (m1,) = [m for m in models if m["id"] == "m1"]
        return bool(m1["pricing"]["input"] == "0.750000"
                    and m1["pricing"]["output"] == "2.125000")

    eventually(lambda: always(priced), "the new price on every worker's /v1/models")
    (entry,) = audited(deployment, "model.update", "model:m1")
    assert entry["actor"].startswith("console:")
    assert entry["before"]["input_price"] == 500_000 and entry["after"]["input_price"] == 750_000
