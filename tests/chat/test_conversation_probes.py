"""The conversation routes under bad input and borrowed cookies: 4xx, never a 500 or a change.

Each route gets bodies and names no honest client sends, in OpenAI's error shape; a
signed-in browser's session changes nothing without its CSRF token.
"""

from __future__ import annotations

import re

import httpx

from tests.support.chat import Person

#: Bodies no honest client sends.
BODIES: list[bytes] = [
    b"", b"null", b"[]", b"[1,2]", b'"text"', b"{", b"\xff\xfe", b'{"title": null}',
    b'{"title": ["a"]}', b'{"title": "\\u0000"}', b'{"title": "a\\u0007b"}',
    b'{"system_prompt": "a\\u0000b"}', b'{"pinned": 1}', b'{"params": []}',
    b'{"params": {"max_tokens": 1e400}}', b'{"params": {"seed": -1}}',
    b'{"params": {"temperature": "hot"}}', b'{"model": {"x": 1}}',
    b'{"system_prompt": 5}', b'{"private": "yes", "name": "../etc"}',
    b'{"name": "' + b"a" * 100 + b'"}', b'{"name": "<script>"}',
    b'{' + b'"a":' * 2000 + b'1' + b'}' * 2000,
]
NAMES = ["x" * 300, "%3Cscript%3E", "..", "p-does-not-exist", "a%00b", "%F0%9F%92%A9"]


async def test_bad_bodies_and_names_get_a_4xx_in_openais_shape(people: list[Person]) -> None:
    alice, _ = people
    room = await alice.room()
    before = (await alice.http.get(f"/api/conversations/{room}")).json()
    routes = [("POST", "/api/rooms"), ("PATCH", f"/api/conversations/{room}")]
    for method, path in routes:
        for body in BODIES:
            answer = await alice.http.request(method, path, content=body,
                                              headers={"content-type": "application/json"})
            assert answer.status_code < 500, (method, path, body[:40], answer.text)
            if answer.status_code >= 400:
                assert answer.json()["error"]["message"], (method, path, body[:40])
    for name in NAMES:
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/export"),
                               ("POST", "/restore"), ("GET", "/shares"), ("POST", "/shares")):
            answer = await alice.http.request(method, f"/api/conversations/{name}{suffix}",
                                              json={"title": "t"})
            assert answer.status_code in (400, 404), (method, name, suffix, answer.text)
    for query in ("\x00", "a" * 201, "a\nb"):
        answer = await alice.http.get("/api/conversations", params={"q": query})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "q"
    for token in ("x" * 300, "a.b", "%00"):
        assert (await alice.http.delete(f"/api/shares/{token}")).status_code in (400, 404)
        assert (await alice.http.get(f"/s/{token}")).status_code in (400, 404)
    after = (await alice.http.get(f"/api/conversations/{room}")).json()
    assert after == before  # nothing a bad call sent changed the conversation
    assert (await alice.http.get(f"/api/conversations/{room}/shares")).json()["data"] == []


async def test_a_session_changes_nothing_without_its_csrf_token(people: list[Person]) -> None:
    alice, _ = people
    room = await alice.room()
    async with httpx.AsyncClient(base_url=alice.portal.url, timeout=30) as browser:
        form = await browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        signed = await browser.post("/login", data={"key": alice.secret, "csrf": csrf})
        assert signed.status_code == 302 and signed.headers["location"] == "/account"
        page = await browser.get(f"/chat/{room}")
        token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
        # Reading needs no token: the sidebar, a conversation, its export.
        assert (await browser.get("/api/conversations")).status_code == 200
        assert (await browser.get(f"/api/conversations/{room}/export")).status_code == 200
        changes = [("PATCH", f"/api/conversations/{room}", {"title": "stolen"}),
                   ("POST", f"/api/conversations/{room}/shares", None),
                   ("DELETE", f"/api/conversations/{room}", None),
                   ("POST", "/api/rooms", {"private": True})]
        for method, path, body in changes:
            for headers in ({}, {"x-csrf-token": "forged"}):
                answer = await browser.request(method, path, json=body, headers=headers)
                assert answer.status_code == 403, (method, path, headers)
        assert (await alice.http.get(f"/api/conversations/{room}")).json()["title"] == room
        assert (await alice.sidebar())[0]["name"] == room  # not deleted
        renamed = await browser.patch(f"/api/conversations/{room}", json={"title": "Mine"},
                                      headers={"x-csrf-token": token})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Mine"
