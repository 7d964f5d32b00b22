"""The account page's keys in a real browser (Chromium): make, limit, edit, rotate, revoke.

What the page does is checked where it counts: on the API, with the secrets it showed.
Forms no honest page sends (an unknown model, another account's key id) are posted
with the browser's own session and CSRF token (Playwright's request context shares
the page's cookies).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from simnode.testing import start_simnode
from tests.support.deployment import Deployment
from tests.support.portal import PortalServer

#: Where the Chromium tests leave what a person may want to look at (screenshots).
ARTIFACTS = Path(os.environ.get("PORTAL_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "build" / "test-artifacts")

#: Two models, priced apart, each on its own simnode.
MODELS = {"alpha": ("0.50", "1.50"), "beta": ("2.00", "6.00")}
MESSAGES = [{"role": "user", "content": "Say something short."}]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    """A portal (2 workers) serving ``alpha`` and ``beta``, both set up before it starts."""
    with start_simnode("--model", "sim-alpha", "--reply-tokens", "6") as alpha, \
            start_simnode("--model", "sim-beta", "--reply-tokens", "6") as beta:
        portal = PortalServer(Path(tmp_path_factory.mktemp("web-keys")), redis_url, workers=2)
        portal.cli("migrate")
        for (name, (input_price, output_price)), node in zip(MODELS.items(), (alpha, beta),
                                                            strict=True):
            portal.add_model(name, served_name=f"sim-{name}", input_price=input_price,
                             output_price=output_price)
            portal.add_node(name, node.url)
        with portal:
            yield Deployment(portal, alpha)


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def ask(deployment: Deployment, secret: str, model: str) -> httpx.Response:
    return httpx.post(deployment.url + "/v1/chat/completions", headers=bearer(secret),
                      json={"model": model, "messages": MESSAGES, "max_tokens": 4}, timeout=30)


def key_status(deployment: Deployment, secret: str) -> httpx.Response:
    return httpx.get(deployment.url + "/v1/key", headers=bearer(secret), timeout=10)


def eventually(check: Callable[[], bool], *, within: float) -> bool:
    """Whether ``check()`` holds at some point in the next ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def sign_in(browser: Any, deployment: Deployment, secret: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())  # the revoke confirmations
    page.goto(deployment.url + "/login")
    page.fill("input[name=key]", secret)
    page.click("button[type=submit]")
    page.wait_for_url("**/account")
    page.errors = errors
    return page


def csrf_of(page: Any) -> str:
    return page.locator("input[name=csrf]").first.get_attribute("value")


def post_form(page: Any, path: str, fields: list[tuple[str, str]]) -> Any:
    """A form post with the page's session, as a crafted client would send it."""
    return page.context.request.post(
        page.url.split("/account")[0] + path, data=urlencode(fields), max_redirects=0,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"})


def keys_of(deployment: Deployment, account_id: int) -> list[tuple]:
    return deployment.sql("SELECT id, name, prefix, rpm, cap, expires_at, revoked_at, models "
                          "FROM api_keys WHERE account_id=? ORDER BY id", account_id)


def account_of(deployment: Deployment, key_id: int) -> int:
    (account_id,), = deployment.sql("SELECT account_id FROM api_keys WHERE id=?", key_id)
    return account_id


def test_make_limit_edit_rotate_and_revoke_keys(chromium, two_models: Deployment) -> None:
    from playwright.sync_api import expect

    manager_id, manager = two_models.key("5")
    page = sign_in(chromium, two_models, manager)
    expect(page.locator("#balance")).to_have_text("$5.000000")
    before = keys_of(two_models, account_of(two_models, manager_id))
    assert len(before) == 1

    # Make an API key limited to alpha, with a daily cap of one dollar.
    page.click("#new-key summary")
    form = page.locator("#create-key")
    form.locator("input[name=name]").fill("Limited <i>one</i>")
    form.locator("select[name=scope]").select_option("api")
    form.locator("input[name=all_models]").uncheck()
    form.locator("input[name=models][value=alpha]").check()
    form.locator("input[name=cap]").fill("1")
    form.locator("select[name=cap_reset]").select_option("daily")
    with page.expect_navigation() as made:
        form.locator("button[type=submit]").click()
    assert made.value.status == 200
    assert made.value.headers["cache-control"] == "no-store"
    secret = page.inner_text("#secret")
    assert re.fullmatch(r"sk-ip-[a-z0-9]{8}_\S+", secret)
    prefix = secret[:14]

    # The table shows it (its name as text, never as markup), never its secret.
    page.goto(two_models.url + "/account")
    row = page.locator(f"#key-table tr[data-prefix='{prefix}']")
    expect(row).to_have_count(1)
    expect(row.locator("td.name")).to_contain_text("Limited <i>one</i>")
    expect(row.locator("td.name")).to_contain_text(prefix + "…")
    assert page.locator("#key-table i").count() == 0
    expect(row.locator("td.scope")).to_have_text("api")
    expect(row.locator(".models")).to_have_text("alpha")
    expect(row.locator(".routes")).to_have_text("every route")
    expect(row.locator("td.cap")).to_contain_text("$1.000000 per day")
    expect(row.locator(".state")).to_have_text("active")
    assert secret not in page.content()
    key_id = int(row.get_attribute("data-key-id"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "account-keys.png"), full_page=True)

    # The secret works on the API, for alpha only.
    assert ask(two_models, secret, "alpha").status_code == 200
    refused = ask(two_models, secret, "beta")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    status = key_status(two_models, secret).json()["data"]
    assert status["models"] == ["alpha"] and status["cap_micros"] == 1_000_000
    assert status["cap_reset"] == "daily" and status["scope"] == "api"

    # Edit its rpm: the API applies it within a second.
    row.locator("a", has_text="Edit").click()
    page.wait_for_url(f"**/account/keys/{key_id}")
    edit = page.locator("#edit-key")
    expect(edit.locator("input[name=rpm]")).to_have_value(str(status["limits"]
                                                              ["requests_per_minute"]))
    expect(edit.locator("input[name=models][value=alpha]")).to_be_checked()
    expect(edit.locator("input[name=cap]")).to_have_value("1.000000")
    edit.locator("input[name=rpm]").fill("7")
    edit.locator("button[type=submit]").click()
    page.wait_for_url(f"**/account/keys/{key_id}?done=saved")
    expect(page.locator(".flash")).to_contain_text("Saved")
    expect(page.locator("#edit-key input[name=rpm]")).to_have_value("7")
    assert eventually(lambda: key_status(two_models, secret).json()["data"]["limits"]
                      ["requests_per_minute"] == 7, within=1.0)
    after_edit = key_status(two_models, secret).json()["data"]
    assert after_edit["models"] == ["alpha"] and after_edit["cap_micros"] == 1_000_000

    # Rotate with a grace period: the old and the new secret both work.
    page.fill("#rotate-key input[name=grace]", "120")
    with page.expect_navigation() as rotated:
        page.click("#rotate-key button[type=submit]")
    assert rotated.value.headers["cache-control"] == "no-store"
    new_secret = page.inner_text("#secret")
    assert new_secret != secret and new_secret.startswith("sk-ip-")
    expect(page.locator("#previous")).to_contain_text("keeps working until")
    assert ask(two_models, new_secret, "alpha").status_code == 200
    assert ask(two_models, secret, "alpha").status_code == 200
    page.goto(two_models.url + f"/account/keys/{key_id}")
    expect(page.locator("#key-state .state")).to_contain_text("old secret valid until")
    page.screenshot(path=str(ARTIFACTS / "key-settings.png"), full_page=True)

    # Revoke it (confirming): both secrets are refused within a second.
    page.click("#revoke-key button[type=submit]")
    page.wait_for_url("**/account?done=revoked")
    revoked = page.locator(f"#key-table tr[data-key-id='{key_id}']")
    expect(revoked.locator(".state")).to_have_text("revoked")
    expect(revoked.locator("td.limits")).to_contain_text("7 requests")
    expect(revoked.locator("td.actions button")).to_have_count(0)
    assert eventually(lambda: key_status(two_models, new_secret).status_code == 401 and
                      key_status(two_models, secret).status_code == 401, within=1.0)
    assert ask(two_models, new_secret, "alpha").status_code == 401
    assert page.errors == []
    page.context.close()


def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(
        chromium, two_models: Deployment) -> None:
    from playwright.sync_api import expect

    manager_id, manager = two_models.key("3")
    account_id = account_of(two_models, manager_id)
    page = sign_in(chromium, two_models, manager)
    token = csrf_of(page)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()

    def fields(*more: tuple[str, str], everything: bool = True) -> list[tuple[str, str]]:
        base = [("csrf", token), ("name", "ok"), ("scope", "api"), ("tpm", "1000"),
                ("cap_reset", "never")]
        return base + ([("all_models", "1"), ("all_routes", "1")] if everything else []) + \
            list(more)

    cases = [
        (fields(("rpm", "10"), ("models", "alpha"), ("models", "no-such-model"),
                ("all_routes", "1"), everything=False), "Models", "no-such-model"),
        (fields(("rpm", "10"), ("cap", "100")), "Credit cap", "balance"),
        (fields(("rpm", "10"), ("expires", yesterday)), "Expires", "past"),
        (fields(("rpm", "many")), "Requests per minute", "whole"),
        (fields(("rpm", "10"), ("all_models", "1"), ("routes", "admin"), everything=False),
         "Routes", "admin"),
    ]
    before = keys_of(two_models, account_id)
    for fields, label, words in cases:
        answer = post_form(page, "/account/keys", fields)
        assert answer.status == 400, (label, answer.text()[:300])
        flash = re.search(r'<p class="flash error" role="status">([^<]*)</p>', answer.text())
        assert flash is not None and flash.group(1).startswith(label + ":"), flash
        assert words in flash.group(1)
        assert keys_of(two_models, account_id) == before  # nothing made

    # The same checks through the browser's own form: a past expiry, shown back.
    page.click("#new-key summary")
    form = page.locator("#create-key")
    form.locator("input[name=name]").fill("Too late")
    form.locator("input[name=expires]").fill(yesterday)
    with page.expect_navigation() as refused:
        form.locator("button[type=submit]").click()
    assert refused.value.status == 400
    expect(page.locator(".flash.error")).to_contain_text("Expires: expires_at is in the past")
    expect(page.locator("#create-key input[name=name]")).to_have_value("Too late")
    expect(page.locator("#create-key input[name=expires]")).to_have_attribute(
        "aria-invalid", "true")
    assert keys_of(two_models, account_id) == before

    # Editing a key with a bad value changes none of its fields, the good ones included.
    edit = [("csrf", token), ("name", "renamed"), ("scope", "manage"), ("rpm", "9"),
            ("tpm", "1000"), ("all_models", "1"), ("all_routes", "1"),
            ("cap_reset", "never"), ("cap", "1000")]
    answer = post_form(page, f"/account/keys/{manager_id}", edit)
    assert answer.status == 400 and "Credit cap:" in answer.text()
    assert keys_of(two_models, account_id) == before
    answer = post_form(page, f"/account/keys/{manager_id}/rotate",
                       [("csrf", token), ("grace", "soon")])
    assert answer.status == 400 and "Grace period:" in answer.text()
    assert keys_of(two_models, account_id) == before
    assert key_status(two_models, manager).status_code == 200  # the secret still works
    assert page.errors == []
    page.context.close()


def test_another_accounts_key_is_not_found_anywhere(chromium, two_models: Deployment) -> None:
    manager_id, manager = two_models.key("2")
    other_id, other = two_models.key("2")
    other_account = account_of(two_models, other_id)
    theirs = keys_of(two_models, other_account)
    page = sign_in(chromium, two_models, manager)
    token = csrf_of(page)

    assert page.goto(two_models.url + f"/account/keys/{other_id}").status == 404
    assert page.goto(two_models.url + f"/account/activity?key={other_id}").status == 404
    csv = page.context.request.get(two_models.url + f"/account/activity.csv?key={other_id}")
    assert csv.status == 404
    edit = [("csrf", token), ("name", "mine now"), ("scope", "api"), ("rpm", "1"),
            ("tpm", "1"), ("all_models", "1"), ("all_routes", "1"), ("cap_reset", "never")]
    for path, fields in ((f"/account/keys/{other_id}", edit),
                         (f"/account/keys/{other_id}/rotate", [("csrf", token),
                                                               ("grace", "60")]),
                         (f"/account/keys/{other_id}/revoke", [("csrf", token)])):
        answer = post_form(page, path, fields)
        assert answer.status == 404, (path, answer.status)
    assert keys_of(two_models, other_account) == theirs
    assert key_status(two_models, other).status_code == 200
    # Ids no key has, and filters no honest page sends: a clear 4xx, never a 500.
    for path, status in ((f"/account/keys/{2**31}", 404), ("/account/keys/" + "9" * 30, 404),
                         ("/account/activity?key=" + "9" * 10, 404),
                         ("/account/activity?key=-1", 400),
                         ("/account/activity?cursor=bogus", 400),
                         ("/account/activity?from=9999-12-31&to=9999-12-31", 400),
                         ("/account/activity?from=2026-02-01&to=2026-01-01", 400),
                         ("/account/activity?to=0001-01-02", 400),
                         ("/account/activity?from=2026-13-01", 400)):
        assert page.goto(two_models.url + path).status == status, path
    # And a key of this account under that path is found (the 404 is about ownership).
    assert page.goto(two_models.url + f"/account/keys/{manager_id}").status == 200
    page.context.close()


def test_rotating_the_key_signed_in_keeps_the_session_and_revoking_it_signs_out(
        chromium, two_models: Deployment) -> None:
    from playwright.sync_api import expect

    manager_id, manager = two_models.key("1")
    page = sign_in(chromium, two_models, manager)
    page.goto(two_models.url + f"/account/keys/{manager_id}")
    page.click("#rotate-key button[type=submit]")  # no grace: the old secret stops at once
    new_secret = page.inner_text("#secret")
    expect(page.locator("#previous")).to_have_text("The old secret no longer works.")
    assert eventually(lambda: key_status(two_models, manager).status_code == 401, within=1.0)
    assert key_status(two_models, new_secret).status_code == 200
    assert page.goto(two_models.url + "/account").url.endswith("/account")  # still signed in
    expect(page.locator(f"#key-table tr[data-key-id='{manager_id}']")).to_have_attribute(
        "data-prefix", new_secret[:14])

    page.click(f"#key-table tr[data-key-id='{manager_id}'] button.danger")
    page.wait_for_url(two_models.url + "/")
    page.goto(two_models.url + "/account")
    assert page.url.endswith("/login")
    assert key_status(two_models, new_secret).status_code == 401
    assert page.errors == []
    page.context.close()
