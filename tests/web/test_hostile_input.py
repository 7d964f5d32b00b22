"""Bytes and values no honest client sends: a clear 4xx in OpenAI's shape, never a 500."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.chat.conftest import ADMIN
from tests.support.standard import Deployment

#: Each page, and what it answers a visitor who is not logged in.
PAGES = [("/", 200), ("/login", 200), ("/keys/new", 200), ("/docs", 200), ("/chat", 302),
         ("/account", 302), ("/topup", 302)]


def raw_get(deployment: Deployment, path: str, headers: dict[str, bytes]) -> httpx.Response:
    return httpx.get(deployment.url + path, headers=headers, timeout=10)


@pytest.mark.parametrize(("path", "status"), PAGES)
def test_a_cookie_of_undecodable_bytes_is_no_session(room_portal: Deployment, path: str,
                                                     status: int) -> None:
    response = raw_get(room_portal, path, {"cookie": b"portal_session=\xff\xfe"})
    assert response.status_code == status, response.text  # as if logged out
    if status == 302:
        assert response.headers["location"] == "/login"


def test_undecodable_session_cookie_with_a_valid_key_still_serves_the_api(
        room_portal: Deployment) -> None:
    _key_id, key = room_portal.key("1")
    response = raw_get(room_portal, "/api/rooms", {"cookie": b"portal_session=\xff",
                                                   "authorization": f"Bearer {key}".encode()})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("headers", [
    {"x-csrf-token": b"\xff", "cookie": b"portal_csrf=y"},
    {"cookie": b"portal_csrf=\xff"},
])
def test_undecodable_csrf_tokens_are_refused(room_portal: Deployment,
                                             headers: dict[str, bytes]) -> None:
    response = httpx.post(room_portal.url + "/login", content=b"csrf=x&key=x",
                          headers={**headers,
                                   "content-type": b"application/x-www-form-urlencoded"})
    assert response.status_code == 403, response.text


def test_undecodable_admin_token_is_refused(room_portal: Deployment) -> None:
    response = raw_get(room_portal, "/admin/nodes", {"authorization": b"Bearer \xff"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"


def admin(deployment: Deployment, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, deployment.url + path,
                         headers={"authorization": f"Bearer {ADMIN}"}, timeout=10, **kwargs)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/admin/jobs?status=bogus", 400),
    ("POST", "/admin/nodes/99999999999999999999999/boot", 404),
    ("POST", "/admin/nodes/9223372036854775808/stop", 404),
    ("POST", "/admin/nodes/0/stop", 404),
    ("GET", "/admin/payments?account_id=9223372036854775808", 400),
    ("GET", "/admin/payments?account_id=" + "0" * 5000 + "1", 400),
])
def test_admin_parameters_out_of_range(room_portal: Deployment, method: str, path: str,
                                       status: int) -> None:
    response = admin(room_portal, method, path)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(("path", "body"), [
    ("/api/rooms", b'{"name": "sur1", "system_prompt": "\\ud800"}'),
    ("/api/rooms", b'{"name": "sur2", "model": ["x"]}'),
    ("/api/rooms", b'{"name": "sur3", "model": {"a": 1}}'),
    ("/v1/jobs", b'{"model": "talker", "messages": [{"role": "user", "content": "\\udc00"}]}'),
    ("/v1/chat/completions",
     b'{"model": "talker", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
    ("/api/rooms", b'{"name": "sur4", "system_prompt": "\xed\xa0\x80"}'),  # encoded
    ("/api/rooms", '{"name": "sur5", "system_prompt": "\\ud800"}'.encode("utf-16")),
    ("/v1/chat/completions",
     '{"model": "talker", "messages": [{"role": "user", "content": "hi"}]}'.encode("utf-16")),
])
def test_lone_surrogates_and_wrong_types_are_400(room_portal: Deployment, path: str,
                                                 body: bytes) -> None:
    _key_id, key = room_portal.key("1")
    before = room_portal.balance(key)
    response = httpx.post(room_portal.url + path, content=body, timeout=10,
                          headers={"authorization": f"Bearer {key}",
                                   "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert room_portal.balance(key) == before


def test_admin_launch_with_a_lone_surrogate_is_400(room_portal: Deployment) -> None:
    response = admin(room_portal, "POST", "/admin/nodes", content=b'{"model": "\\ud800"}')
    assert response.status_code == 400, response.text


def test_a_surrogate_pair_is_text(room_portal: Deployment) -> None:
    _key_id, key = room_portal.key("1")
    response = httpx.post(room_portal.url + "/api/rooms", timeout=10,
                          content=b'{"name": "emoji", "system_prompt": "hi \\ud83d\\ude00"}',
                          headers={"authorization": f"Bearer {key}"})
    assert response.status_code in (200, 201), response.text


def test_an_overlong_job_id_is_not_found(room_portal: Deployment) -> None:
    _key_id, key = room_portal.key("1")
    response = httpx.get(room_portal.url + "/v1/jobs/" + "a" * 5000,
                         headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["param"] == "id"


@pytest.mark.parametrize("path", ["/static/", "/static/app.js/x"])
def test_static_paths_that_are_not_files_are_404(room_portal: Deployment, path: str) -> None:
    response = httpx.get(room_portal.url + path, timeout=10)
    assert response.status_code == 404, response.text


def test_signups_are_counted_by_connection_not_by_a_forged_header(
        room_portal: Deployment) -> None:
    """Without PORTAL_REAL_IP_HEADER (no trusted proxy), X-Real-IP is the client's word."""
    statuses = []
    with httpx.Client(base_url=room_portal.url, timeout=10) as browser:
        for n in range(25):
            page = browser.get("/keys/new").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            statuses.append(browser.post("/keys/new", data={"name": f"n{n}", "csrf": csrf},
                                         headers={"x-real-ip": f"10.0.0.{n}"}).status_code)
    assert 429 in statuses
