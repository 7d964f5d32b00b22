"""``/contact``: a message is stored, then mailed to a real SMTP server (aiosmtpd), and
kept with its error when the server is down; the honeypot, the time check, the hourly
limit, bad input and a missing CSRF token are each refused and store nothing. In-process.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from edge.contact.form import TRAP, stamp
from edge.db.models import ContactMessage
from tests.support.inprocess import InProcessPortal, open_portal
from tests.support.portal import PortalServer
from tests.support.services import sql_query

TOKEN = "contact-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
OPERATOR = "ops@portal.test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mailbox:
    """aiosmtpd's handler: keeps every mail it is given."""

    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
async def portal_with(tmp_path: Path, redis_url: str, sqlite_template: Path):
    """Open a portal with the settings given (the SMTP server's port is known only here)."""
    opened: list[Any] = []

    async def open_with(**settings: Any) -> InProcessPortal:
        context = open_portal(tmp_path / f"p{len(opened)}", redis_url,
                              template=sqlite_template, admin_token=TOKEN, **settings)
        opened.append(context)
        return await context.__aenter__()

    yield open_with
    for context in reversed(opened):
        await context.__aexit__(None, None, None)


async def form_of(portal: InProcessPortal) -> dict[str, str]:
    """The form's hidden fields as shown, its stamp back-dated past the time check."""
    page = await portal.client.get("/contact")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return {"csrf": csrf, "stamp": stamp(portal.ctx.pepper, time.time() - 10), TRAP: ""}


async def send(portal: InProcessPortal, **fields: str) -> Any:
    data = {**await form_of(portal), "name": "Ada Lovelace", "email": "ada@example.com",
            "message": "Do you serve Llama 3.1 70B?\nThanks."}
    data.update(fields)
    return await portal.client.post("/contact", data=data)


async def test_the_footer_links_the_page(inprocess_portal: InProcessPortal) -> None:
    home = await inprocess_portal.client.get("/")
    assert 'href="/contact"' in home.text


async def test_a_message_is_stored_then_mailed_to_the_operator(
        portal_with: Any, smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    portal = await portal_with(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False,
                               contact_to=OPERATOR, smtp_from="portal@portal.test")
    answer = await send(portal)
    assert answer.status_code == 200 and "Thank you" in answer.text
    (envelope,) = mailbox.mails
    assert envelope.rcpt_tos == [OPERATOR]
    mail = message_from_bytes(envelope.content)
    assert mail["Reply-To"] == "Ada Lovelace <ada@example.com>"
    assert "Contact form: Ada Lovelace" in mail["Subject"]
    assert "Do you serve Llama 3.1 70B?" in mail.get_payload(decode=True).decode()
    (row,) = await ContactMessage.all()
    assert row.mailed_at is not None and row.mail_error == ""
    assert row.client_ip == "127.0.0.1"
    inbox = await portal.client.get("/admin/contact", headers=ADMIN)
    assert inbox.status_code == 200
    (shown,) = inbox.json()["data"]
    assert (shown["email"], shown["mailed_at"] is not None) == ("ada@example.com", True)


async def test_a_message_is_kept_with_its_error_when_mail_is_down(portal_with: Any) -> None:
    portal = await portal_with(smtp_host="127.0.0.1", smtp_port=free_port(),
                               smtp_starttls=False, contact_to=OPERATOR, smtp_timeout=2.0)
    answer = await send(portal, message="Still here?")
    assert answer.status_code == 200 and "Thank you" in answer.text
    await send(portal, message="And a second one.")
    inbox = (await portal.client.get("/admin/contact?limit=5", headers=ADMIN)).json()["data"]
    assert [m["message"] for m in inbox] == ["And a second one.", "Still here?"]  # newest first
    for message in inbox:
        assert message["mailed_at"] is None
        assert "Connection" in message["mail_error"] or "refused" in message["mail_error"]


async def test_without_smtp_messages_are_only_stored(inprocess_portal: InProcessPortal) -> None:
    assert (await send(inprocess_portal)).status_code == 200
    (row,) = await ContactMessage.all()
    assert (row.mailed_at, row.mail_error) == (None, "")


def _control() -> str:
    return "hello\x00there"


@pytest.mark.parametrize(("fields", "said"), [
    ({TRAP: "http://spam.example"}, "looked automated"),
    ({"stamp": "FRESH"}, "quicker than a person"),
    ({"stamp": "OLD"}, "more than a day old"),
    ({"stamp": "12345.forged"}, "did not come from this page"),
    ({"name": ""}, "Give your name"),
    ({"message": "   "}, "Give your name"),
    ({"email": "ada.example.com"}, "email address"),
    ({"message": "x" * 5001}, "5,001 characters"),
    ({"message": _control()}, "control characters"),
    ({"name": "Ada\u202eecalevol"}, "Your name"),
])
async def test_refused_forms_store_nothing(inprocess_portal: InProcessPortal,
                                           fields: dict[str, str], said: str) -> None:
    pepper = inprocess_portal.ctx.pepper
    if fields.get("stamp") == "FRESH":
        fields = {"stamp": stamp(pepper)}
    elif fields.get("stamp") == "OLD":
        fields = {"stamp": stamp(pepper, time.time() - 2 * 86400)}
    answer = await send(inprocess_portal, **fields)
    assert answer.status_code == 400, answer.text
    assert said in answer.text.replace("&#39;", "'")
    if "name" not in fields:
        assert 'value="Ada Lovelace"' in answer.text  # the fields are kept to send again
    assert await ContactMessage.all().count() == 0


async def test_a_form_without_its_csrf_token_is_refused(
        inprocess_portal: InProcessPortal) -> None:
    answer = await send(inprocess_portal, csrf="made-up")
    assert answer.status_code == 403
    assert await ContactMessage.all().count() == 0


@pytest.mark.portal_settings(contacts_per_hour=2)
async def test_messages_are_limited_per_address_per_hour(
        inprocess_portal: InProcessPortal) -> None:
    statuses = [(await send(inprocess_portal, message=f"number {n}")).status_code
                for n in range(3)]
    assert statuses == [200, 200, 429]
    assert sorted(await ContactMessage.all().values_list("message", flat=True)) == [
        "number 0", "number 1"]
    limited = await send(inprocess_portal)
    assert limited.headers["retry-after"] == "3600" and "Too many messages" in limited.text


@pytest.mark.portal_settings(admin_token=TOKEN)
async def test_the_inbox_and_the_audit_log_need_the_admin_token(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    for path in ("/admin/contact", "/admin/audit"):
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers={"authorization": "Bearer wrong"})
                ).status_code == 401
        assert (await http.get(path, headers=ADMIN)).status_code == 200
        assert (await http.get(f"{path}?limit=0", headers=ADMIN)).status_code == 400


@pytest.mark.parametrize(("body", "kind"), [
    (b"\xff\xfe=\xfa&name=\xc3", "application/x-www-form-urlencoded"),
    (b'{"name": "Ada", "email": "a@b.c", "message": "hi"}', "application/json"),
    (b"--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nAda\r\n--x--",
     "multipart/form-data; boundary=x"),
    (b"", "text/plain"),
])
async def test_bodies_no_form_sends_are_refused_without_a_500(
        inprocess_portal: InProcessPortal, body: bytes, kind: str) -> None:
    await inprocess_portal.client.get("/contact")  # the CSRF cookie
    answer = await inprocess_portal.client.post("/contact", content=body,
                                                headers={"content-type": kind})
    assert 400 <= answer.status_code < 500, answer.text
    assert await ContactMessage.all().count() == 0


async def test_a_hostile_field_with_the_right_token_is_refused_without_a_500(
        inprocess_portal: InProcessPortal) -> None:
    for fields in ({"email": "a@b.c\r\nBcc: victim@example.com"},
                   {"name": "Ada\r\nBcc: victim@example.com"},
                   {"email": "@example.com"}, {"email": "ada@localhost"},
                   {"name": "x" * 101}, {"stamp": "9" * 40 + ".x"}, {"stamp": ""}):
        answer = await send(inprocess_portal, **fields)
        assert answer.status_code == 400, (fields, answer.text)
    assert await ContactMessage.all().count() == 0


def test_portal_contact_list_shows_the_inbox(tmp_path: Path, redis_url: str) -> None:
    portal = PortalServer(tmp_path, redis_url)
    portal.cli("migrate")
    database = f"sqlite://{tmp_path / 'data' / 'portal.sqlite3'}"
    for n, error in ((1, "ConnectionRefusedError: [Errno 111] refused"), (2, "")):
        sql_query(database, "INSERT INTO contact_messages (name, email, message, client_ip, "
                  "created_at, mail_error) VALUES (?, ?, ?, ?, ?, ?)", f"visitor {n}",
                  f"v{n}@example.com", f"message {n}", "10.0.0.1",
                  "2026-01-01 00:00:00+00:00", error)
    listed = portal.cli_json("contact", "list")
    assert [m["message"] for m in listed] == ["message 2", "message 1"]
    text = portal.cli("contact", "list").stdout
    assert "NOT MAILED: ConnectionRefusedError" in text and "stored only" in text


def test_mail_settings_are_checked_at_start_up() -> None:
    from edge.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="PORTAL_CONTACT_TO"):
        Settings(smtp_host="smtp.example.com")
    shown = repr(Settings(smtp_host="smtp.example.com", contact_to=OPERATOR,
                          smtp_password="hunter2"))
    assert "hunter2" not in shown and "smtp_password='***'" in shown
    env = Settings.from_env({"PORTAL_SMTP_STARTTLS": "false", "PORTAL_SMTP_PORT": "2525"},
                            dotenv=None)
    assert (env.smtp_starttls, env.smtp_port, Settings().smtp_starttls) == (False, 2525, True)
