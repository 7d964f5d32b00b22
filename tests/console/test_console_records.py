"""The console's record pages, in process: each shows what the database holds (rows made
through the domain's own functions), its filters and paging select exactly, and hostile
or malformed query strings are a 400 page (or ignored), never a 500."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest

from edge import audit
from edge.db.models import ContactMessage
from tests.console.test_console_auth import sign_in
from tests.support.inprocess import InProcessPortal

TOKEN = "console-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)

#: Query values no page may answer with a 500.
HOSTILE = ("'; DROP TABLE ledger; --", "\x00", "%00", "x" * 5000, "ü" * 300, "-1", "1e9",
           "99999999999999999999999", "<script>alert(1)</script>", "../../etc/passwd",
           " ", "\r\n", "[]", "{}")


async def page(portal: InProcessPortal, path: str, **params: str) -> httpx.Response:
    answer = await portal.client.get(path, params=params)
    assert answer.status_code < 500, (path, params, answer.text[:500])
    return answer


def rows(answer: httpx.Response, table: str, attribute: str) -> list[str]:
    """The ``data-<attribute>`` of each row of table ``#table``, in page order."""
    assert answer.status_code == 200, answer.text[:500]
    body = answer.text.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(rf'<tr data-{attribute}="([^"]+)"', body)


def text(answer: httpx.Response) -> str:
    """The page's words, without its tags."""
    return unescape(re.sub(r"<[^>]+>", " ", answer.text))


async def signed_in(portal: InProcessPortal) -> InProcessPortal:
    assert (await sign_in(portal, TOKEN)).status_code == 302
    return portal


@pytest.fixture
async def console(inprocess_portal: InProcessPortal) -> InProcessPortal:
    return await signed_in(inprocess_portal)


async def test_the_inbox_shows_every_message_and_whether_it_was_mailed(
        console: InProcessPortal) -> None:
    stored = await ContactMessage.create(name="Ada", email="ada@example.com",
                                         message="Stored <b>only</b>.", client_ip="10.0.0.1")
    failed = await ContactMessage.create(name="Bob", email="bob@example.com",
                                         message="The mail was down.", client_ip="10.0.0.2",
                                         mail_error="Connection refused by smtp:587")
    mailed = await ContactMessage.create(name="Cy", email="cy@example.com", message="Mailed.")
    await ContactMessage.filter(id=mailed.id).update(mailed_at=mailed.created_at)

    answer = await page(console, "/admin/console/inbox")
    assert rows(answer, "inbox", "message") == [str(mailed.id), str(failed.id), str(stored.id)]
    words = text(answer)
    assert "Connection refused by smtp:587" in words and "not mailed" in words
    assert "Stored <b>only</b>." in words and "<b>only" not in answer.text  # escaped
    assert "stored only" in words and "mailed" in words
    limited = await page(console, "/admin/console/inbox", limit="2")
    assert rows(limited, "inbox", "message") == [str(mailed.id), str(failed.id)]
    for odd in HOSTILE:
        assert (await page(console, "/admin/console/inbox", limit=odd)).status_code == 200


async def test_the_audit_log_filters_by_target_and_action_and_shows_json(
        console: InProcessPortal) -> None:
    first = await audit.record("cli", "key.revoke", "key:1", {"revoked": False},
                               {"revoked": True, "name": "ünïcode"})
    second = await audit.record("admin-api", "account.credit", "account:7", None,
                                {"balance": "5.000000", "note": "goodwill"})
    third = await audit.record("console:10.0.0.1", "key.revoke", "key:2", {"revoked": False},
                               {"revoked": True})

    answer = await page(console, "/admin/console/audit")
    assert rows(answer, "audit", "entry") == [str(third.id), str(second.id), str(first.id)]
    assert '"note": "goodwill"' in unescape(answer.text)
    assert '"name": "ünïcode"' in unescape(answer.text)  # readable, not \u-escaped
    by_action = await page(console, "/admin/console/audit", action="key.revoke")
    assert rows(by_action, "audit", "entry") == [str(third.id), str(first.id)]
    by_target = await page(console, "/admin/console/audit", target="account:7")
    assert rows(by_target, "audit", "entry") == [str(second.id)]
    both = await page(console, "/admin/console/audit", target="key:1", action="key.revoke")
    assert rows(both, "audit", "entry") == [str(first.id)]
    assert rows(await page(console, "/admin/console/audit", limit="1"), "audit",
                "entry") == [str(third.id)]
    assert rows(await page(console, "/admin/console/audit", target="key:9"), "audit",
                "entry") == []
    # The page shows what the API answers.
    api = (await console.client.get("/admin/audit", headers=ADMIN,
                                    params={"action": "key.revoke"})).json()["data"]
    assert [str(e["id"]) for e in api] == rows(by_action, "audit", "entry")

    for odd in HOSTILE:
        for name in ("target", "action", "limit"):
            answer = await page(console, "/admin/console/audit", **{name: odd})
            assert answer.status_code in (200, 400), (name, odd)
    refused = await page(console, "/admin/console/audit", target="x" * 201)
    assert refused.status_code == 400 and "'target'" in text(refused)
    assert (await page(console, "/admin/console/audit", action="a\x00b")).status_code == 400
