"""CORS for browser apps: a page of an allowed origin calls the API from Chromium; any other
origin, the pages and the admin API get no CORS headers; preflights touch nothing."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simnode.testing import free_port
from tests.support.deployment import deploy
from tests.support.standard import MODEL, SERVED, Deployment

PAGE_PORT = free_port()
#: The app's page is served from 127.0.0.1; "localhost" is another origin, not allowed.
ALLOWED = f"http://127.0.0.1:{PAGE_PORT}"
OTHER = f"http://localhost:{PAGE_PORT}"


@pytest.fixture(scope="module")
def app_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static page of a browser app, on its own origin."""
    root = tmp_path_factory.mktemp("app")
    (root / "index.html").write_text("<!doctype html><title>app</title><p>app</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PAGE_PORT), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ALLOWED
    server.shutdown()


@pytest.fixture(scope="module")
def cors_portal(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    with deploy(Path(tmp_path_factory.mktemp("cors")), redis_url, model=MODEL, served=SERVED,
                workers=1, env={"PORTAL_CORS_ORIGINS": f"{ALLOWED}, https://app.example"}) \
            as made:
        yield made


FETCH = """async ([url, key, model]) => {
  try {
    const r = await fetch(url + "/v1/chat/completions", {method: "POST",
      headers: {"authorization": "Bearer " + key, "content-type": "application/json"},
      body: JSON.stringify({model, messages: [{role: "user", content: "hi"}], max_tokens: 3})});
    const body = await r.json();
    return {status: r.status, cost: r.headers.get("x-portal-cost-micros"),
            usage: body.usage};
  } catch (e) { return {error: String(e)}; }
}"""


def test_a_page_of_an_allowed_origin_calls_the_api(chromium, app_page: str,
                                                   cors_portal: Deployment) -> None:
    _key_id, key = cors_portal.key("1")
    page = chromium.new_page()
    page.goto(app_page + "/index.html")
    result = page.evaluate(FETCH, [cors_portal.url, key, MODEL])
    assert result.get("status") == 200, result
    assert int(result["cost"]) > 0  # an exposed header the script can read
    assert round(result["usage"]["cost"] * 1_000_000) == int(result["cost"])

    other = chromium.new_page()
    other.goto(OTHER + "/index.html")
    refused = other.evaluate(FETCH, [cors_portal.url, key, MODEL])
    assert "error" in refused and "Failed to fetch" in refused["error"], refused


def test_preflights_and_headers(cors_portal: Deployment) -> None:
    url = cors_portal.url + "/v1/chat/completions"
    asked = {"origin": "https://app.example", "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type, x-portal-wait"}
    answer = httpx.options(url, headers=asked)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-allow-headers"] == asked["access-control-request-headers"]
    # Unknown origins, and paths outside the API, get no CORS headers at all.
    for origin, path in (("https://evil.example", "/v1/chat/completions"),
                         ("https://app.example", "/admin/nodes"),
                         ("https://app.example", "/account")):
        answer = httpx.options(cors_portal.url + path, headers={**asked, "origin": origin})
        assert answer.status_code == 204 and \
            "access-control-allow-origin" not in answer.headers, (origin, path)
    # A preflight needs no key and spends nothing; a call without Origin gets no CORS headers.
    _key_id, key = cors_portal.key("1")
    plain = httpx.get(cors_portal.url + "/v1/models", headers={"authorization": f"Bearer {key}"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    fetched = httpx.get(cors_portal.url + "/v1/models",
                        headers={"origin": "https://app.example"})
    assert fetched.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-portal-cost-micros" in fetched.headers["access-control-expose-headers"]


def test_cors_is_off_by_default(deployment: Deployment) -> None:
    answer = httpx.options(deployment.url + "/v1/chat/completions",
                           headers={"origin": "https://app.example",
                                    "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in answer.headers
    assert answer.status_code == 405
