"""The pages over HTTP: forms, CSRF, sessions, headers, errors for people."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.standard import Deployment


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest.fixture
def browser(room_portal: Deployment):
    with httpx.Client(base_url=room_portal.url, follow_redirects=False,
                      headers={"accept": "text/html"}) as client:
        yield client


def sign_up(browser: httpx.Client, name: str = "Grace") -> str:
    form = browser.get("/keys/new")
    answer = browser.post("/keys/new", data={"name": name, "csrf": csrf_of(form.text)})
    assert answer.status_code == 200, answer.text
    return re.search(r'<code id="secret">([^<]+)</code>', answer.text).group(1)


def test_home_lists_models_with_prices_and_state(browser: httpx.Client) -> None:
    page = browser.get("/")
    assert page.status_code == 200
    assert "<code>talker</code>" in page.text and "$0.500000" in page.text
    assert 'class="state state-running"' in page.text
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert '<meta name="viewport"' in page.text  # usable on a phone


def test_sign_up_shows_the_key_once_and_signs_in(browser: httpx.Client,
                                                  room_portal: Deployment) -> None:
    secret = sign_up(browser)
    assert secret.startswith("sk-ip-")
    account = browser.get("/account")
    assert account.status_code == 200 and "Grace" in account.text
    assert "$1.000000" in account.text  # the signup credit of this portal
    assert secret not in account.text  # never shown again
    api = httpx.get(room_portal.url + "/v1/key", headers={"authorization": f"Bearer {secret}"})
    assert api.json()["data"]["name"] == "Grace"


def test_forms_without_the_csrf_token_are_refused(browser: httpx.Client) -> None:
    browser.get("/keys/new")
    refused = browser.post("/keys/new", data={"name": "Mallory"})
    assert refused.status_code == 403
    assert "<h1>" in refused.text  # a page for people, not JSON
    forged = browser.post("/keys/new", data={"name": "Mallory", "csrf": "made-up"})
    assert forged.status_code == 403
    secret = sign_up(browser, "Ok")
    assert secret
    assert browser.post("/account/revoke", data={"csrf": "wrong"}).status_code == 403
    assert browser.get("/account").status_code == 200  # still signed in, key alive


def test_log_in_with_a_key_and_out_again(browser: httpx.Client,
                                          room_portal: Deployment) -> None:
    _id, key = room_portal.key("2")
    form = browser.get("/login")
    wrong = browser.post("/login", data={"key": "sk-ip-bad", "csrf": csrf_of(form.text)})
    assert wrong.status_code == 401 and "Incorrect API key" in wrong.text
    done = browser.post("/login", data={"key": key, "csrf": csrf_of(form.text)})
    assert done.status_code == 302 and done.headers["location"] == "/account"
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert key not in cookie
    account = browser.get("/account")
    assert "$2.000000" in account.text
    browser.post("/logout", data={"csrf": csrf_of(account.text)})
    assert browser.get("/account").status_code == 302


def test_revoking_from_the_account_page(browser: httpx.Client, room_portal: Deployment) -> None:
    secret = sign_up(browser, "Leaving")
    account = browser.get("/account")
    gone = browser.post("/account/revoke", data={"csrf": csrf_of(account.text)})
    assert gone.status_code == 302
    assert browser.get("/account").status_code == 302
    api = httpx.get(room_portal.url + "/v1/key", headers={"authorization": f"Bearer {secret}"})
    assert api.status_code == 401


def test_signed_out_pages_redirect_to_login(browser: httpx.Client) -> None:
    for path in ("/account", "/chat", "/chat/lobby", "/topup"):
        answer = browser.get(path)
        assert answer.status_code == 302 and answer.headers["location"] == "/login"


def test_top_up_page_says_payments_are_off_without_stripe(browser: httpx.Client) -> None:
    sign_up(browser, "Payer")
    assert "Payments are off" in browser.get("/topup").text


def test_chat_page_and_api_docs(browser: httpx.Client, room_portal: Deployment) -> None:
    sign_up(browser, "Chatty")
    page = browser.get("/chat/lobby")
    assert page.status_code == 200 and 'data-room="lobby"' in page.text
    assert '<option value="talker">' in page.text
    docs = browser.get("/docs")
    assert room_portal.url + "/v1" in docs.text and "openai" in docs.text
    spec = httpx.get(room_portal.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/key", "/v1/jobs",
            "/v1/jobs/{id}", "/v1/key/payments", "/api/topup",
            "/api/payments/config"} <= set(spec["paths"])


def test_errors_are_pages_for_browsers_and_json_for_programs(browser: httpx.Client,
                                                             room_portal: Deployment) -> None:
    page = browser.get("/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    api = httpx.get(room_portal.url + "/v1/no-such", headers={"accept": "text/html"})
    assert api.json()["error"]["code"] == "not_found"


def test_static_files_and_markdown_escaping_script(browser: httpx.Client) -> None:
    script = browser.get("/static/markdown.js")
    assert script.status_code == 200 and "escapeHtml" in script.text
    assert browser.get("/static/../pyproject.toml").status_code in (400, 404)
