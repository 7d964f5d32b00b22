"""The top-up page: a signed-in browser opens a Stripe Checkout with its session."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx

from tests.payments.conftest import Shop


class Browser:
    """Keeps cookies by hand: the shop's public URL is https, so they are Secure,
    and httpx (rightly) would not send them to the test's plain-http address."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, headers={"accept": "text/html"})
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.client.request(method, path, headers=headers, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            cookie = SimpleCookie(header)
            for name, morsel in cookie.items():
                assert morsel["secure"] and morsel["httponly"]
                self.cookies[name] = morsel.value
        return response


def test_signed_in_browser_starts_a_checkout(shop: Shop) -> None:
    key_id, key = shop.key("0")
    browser = Browser(shop.url)
    form = browser.request("GET", "/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert browser.request("POST", "/login", data={"key": key, "csrf": csrf}).status_code == 302
    page = browser.request("GET", "/topup")
    assert page.status_code == 200 and 'id="topup"' in page.text
    assert 'min="5.000000"' in page.text  # bounds from the payment settings
    token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)

    refused = browser.request("POST", "/api/topup", json={"amount": "20"})
    assert refused.status_code == 403  # the session needs the page's token
    started = browser.request("POST", "/api/topup", json={"amount": "20"},
                              headers={"x-csrf-token": token})
    assert started.status_code == 200, started.text
    payment = started.json()
    assert payment["url"] and payment["amount"] == "20.000000"
    (session,) = [call for call in shop.stripe.calls("POST", "/v1/checkout/sessions")
                  if call.form.get("client_reference_id") == str(key_id)]
    assert session.form["line_items[0][price_data][unit_amount]"] == "2000"

    account = browser.request("GET", "/account")
    assert "20.000000" in account.text and "created" in account.text
