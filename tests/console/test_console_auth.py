"""The console's door: signing in with the admin token, the session's cookie, CSRF,
the idle timeout, and every ``/admin`` route refused to anyone without token or session."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from edge.db.models import AuditEntry
from edge.identity.console_sessions import COOKIE
from tests.support.inprocess import InProcessPortal

TOKEN = "console-admin-token"
pytestmark = pytest.mark.portal_settings(admin_token=TOKEN, console_logins_per_hour=3)


async def sign_in(portal: InProcessPortal, token: str = TOKEN) -> httpx.Response:
    """Sign in as a browser would: fetch the form (its CSRF cookie and field), post it."""
    http = portal.client
    form = await http.get("/admin/console/login")
    assert form.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await http.post("/admin/console/login", data={
        "csrf": csrf.group(1), "token": token, "next": "/admin/console/nodes"})


def page_csrf(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf" content="([^"]+)"', page.text)
    assert found is not None and found.group(1)
    return found.group(1)


async def test_the_admin_token_opens_a_session_of_its_own(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    assert (await http.get("/admin/console/nodes")).headers["location"].startswith(
        "/admin/console/login?next=")
    wrong = await sign_in(inprocess_portal, "not-the-token")
    assert wrong.status_code == 401 and "not the admin token" in wrong.text
    assert COOKIE not in http.cookies

    signed = await sign_in(inprocess_portal)
    assert signed.status_code == 302 and signed.headers["location"] == "/admin/console/nodes"
    cookie = signed.headers["set-cookie"]
    for flag in ("Path=/admin", "HttpOnly", "SameSite=Strict"):
        assert flag.lower() in cookie.lower()
    page = await http.get("/admin/console/nodes")
    assert page.status_code == 200 and "Launch" in page.text
    assert page.headers["cache-control"] == "no-store"
    # The customer's session cookie is not the console's: it opens nothing here.
    assert "portal_session" not in http.cookies

    # Signing out needs the session's token, then ends the session for good.
    refused = await http.post("/admin/console/logout", data={"csrf": "forged"})
    assert refused.status_code == 403
    out = await http.post("/admin/console/logout", data={"csrf": page_csrf(page)})
    assert out.status_code == 302
    stale = await http.get("/admin/console/nodes",
                           headers={"cookie": f"{COOKIE}={signed.cookies[COOKIE]}"})
    assert stale.status_code == 302 and "/login" in stale.headers["location"]


async def test_state_changing_calls_with_the_session_need_its_csrf_token(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    await inprocess_portal.add_model("m1")
    await sign_in(inprocess_portal)
    page = await http.get("/admin/console/nodes")
    csrf = page_csrf(page)
    # Reading needs no token; the API answers the session as it answers the bearer.
    assert (await http.get("/admin/nodes")).status_code == 200
    body = {"max_nodes": 3}
    for headers in ({}, {"x-csrf-token": "forged"}):
        refused = await http.patch("/admin/models/m1/policy", json=body, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
    assert not await AuditEntry.filter(action="model.policy").exists()
    done = await http.patch("/admin/models/m1/policy", json=body,
                            headers={"x-csrf-token": csrf})
    assert done.status_code == 200 and done.json()["max_nodes"] == 3
    entry = await AuditEntry.get(action="model.policy")
    assert entry.actor.startswith("console:") and entry.after["max_nodes"] == 3


async def test_a_session_ends_when_idle_too_old_or_the_token_changes(
        inprocess_portal: InProcessPortal) -> None:
    sessions = inprocess_portal.ctx.console_sessions
    opened = await sessions.open(TOKEN)
    assert await sessions.load(opened.id, TOKEN) is not None
    assert await sessions.load(opened.id, "a-rotated-token") is None  # and it is gone:
    assert await sessions.load(opened.id, TOKEN) is None

    short = type(sessions)(inprocess_portal.ctx.store, idle=1, lifetime=60)
    idle = await short.open(TOKEN)
    assert await short.load(idle.id, TOKEN) is not None
    await asyncio.sleep(1.3)
    assert await short.load(idle.id, TOKEN) is None

    old = await sessions.open(TOKEN)
    await inprocess_portal.ctx.store.client.hset(sessions._key(old.id), "opened",
                                                 repr(old.opened_at - 13 * 3600))
    assert await sessions.load(old.id, TOKEN) is None
    for odd in (None, "", "x" * 200, "../etc", "ü"):
        assert await sessions.load(odd, TOKEN) is None


async def test_failed_sign_ins_are_limited_per_address(
        inprocess_portal: InProcessPortal) -> None:
    for _ in range(3):
        assert (await sign_in(inprocess_portal, "guess")).status_code == 401
    blocked = await sign_in(inprocess_portal)  # even the right token, this hour
    assert blocked.status_code == 429 and COOKIE not in inprocess_portal.client.cookies


async def test_next_never_leaves_the_console(inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    form = await http.get("/admin/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    for away in ("https://evil.example/", "//evil.example/admin/console", "/account",
                 "/admin/console\\@evil"):
        signed = await http.post("/admin/console/login", data={
            "csrf": csrf.group(1), "token": TOKEN, "next": away})
        assert signed.headers["location"] == "/admin/console"


def _concrete(path: str) -> str:
    """A route's path with each parameter filled in (``<id:int>`` → 1)."""
    return re.sub(r"<([^>:]+)(?::([^>]+))?>",
                  lambda m: "1" if (m.group(2) or "") == "int" else "m1", path)


async def test_every_admin_route_is_refused_without_token_or_session(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    routes = [(method, "/" + route.path.lstrip("/"))
              for route in inprocess_portal.app.router.routes
              for method in route.methods
              if route.path.lstrip("/").startswith("admin") and method != "OPTIONS"]
    open_paths = {"/admin", "/admin/console/login"}
    checked = 0
    for method, path in sorted(set(routes)):
        if path in open_paths or path.rstrip("/") in open_paths:
            continue
        url = _concrete(path)
        for headers in ({}, {"authorization": "Bearer wrong"},
                        {"cookie": f"{COOKIE}=forged-session"}):
            answer = await http.request(method, url, headers=headers, json={})
            if path.startswith("/admin/console"):
                assert answer.status_code in (302, 401), (method, url, headers)
                if answer.status_code == 302:
                    assert "/admin/console/login" in answer.headers["location"]
            else:
                assert answer.status_code == 401, (method, url, headers, answer.text)
            checked += 1
    assert checked >= 3 * 20  # the API's routes and the console's pages
