"""The console's record pages, in process: each shows what the database holds (rows made
through the domain's own functions), its filters and paging select exactly, and hostile
or malformed query strings are a 400 page (or ignored), never a 500."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest

from edge import audit, metrics
from edge.billing.credits import credit
from edge.db.models import (
    ApiKey,
    ContactMessage,
    Job,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    Payment,
    PaymentStatus,
    WebhookEvent,
)
from edge.jobs.store import new_job_id
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
    answer = await portal.client.get(path, params=params or None)  # {} drops path's query
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


# -- helpers that make rows as the portal does ------------------------------------------
async def account_of(portal: InProcessPortal, credit_usd: str = "0") -> tuple[int, int]:
    """A new key and its account: ``(key id, account id)``."""
    key_id, _secret = await portal.create_key(credit_usd)
    return key_id, (await ApiKey.get(id=key_id)).account_id


async def ledger_row(portal: InProcessPortal, account: int, micros: int, reference: str, *,
                     kind: LedgerKind = LedgerKind.ADJUSTMENT, note: str = "") -> None:
    """A ledger row through the one credit function, in SQL when it returns."""
    done = await credit(account, micros, kind=kind, reference=reference, note=note,
                        store=portal.ctx.store, grace=0)
    assert not done.duplicate


async def job(key_id: int, model: str, status: JobStatus, **fields: Any) -> Job:
    now = datetime.now(UTC)
    made: Job = await Job.create(id=new_job_id(), key_id=key_id, model=model, body={},
                                 status=status, request_id="req_" + new_job_id(),
                                 deadline_at=now + timedelta(minutes=5), **fields)
    return made


async def test_jobs_are_listed_newest_first_and_filtered_as_the_api_filters_them(
        console: InProcessPortal) -> None:
    first_key, first_account = await account_of(console)
    second_key, second_account = await account_of(console)
    now = datetime.now(UTC)
    queued = await job(first_key, "m1", JobStatus.QUEUED)
    done = await job(first_key, "m2", JobStatus.SUCCEEDED, settled=True, cost=1_234_567,
                     attempts=2, node_id=7, started_at=now, finished_at=now,
                     result={"choices": []})
    failed = await job(second_key, "m1", JobStatus.FAILED, settled=True, attempts=3,
                       error={"message": "Every node refused: <b>busy</b>",
                              "code": "upstream_unavailable"})

    answer = await page(console, "/admin/console/jobs")
    assert rows(answer, "jobs", "job") == [failed.id, done.id, queued.id]
    shown = answer.text.split(f'data-job="{done.id}"', 1)[1].split("</tr>", 1)[0]
    cells = [unescape(re.sub(r"<[^>]+>", "", cell)).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", shown, re.S)]
    assert cells[1:8] == ["succeeded", "m2 chat", str(first_account), str(first_key),
                          "1.234567", "2", "7"]
    assert "Every node refused: <b>busy</b>" in text(answer) and "<b>busy" not in answer.text
    assert "reserved" in answer.text.split(f'data-job="{queued.id}"', 1)[1].split("</tr>")[0]

    async def ids(**params: str) -> list[str]:
        shown = rows(await page(console, "/admin/console/jobs", **params), "jobs", "job")
        api = await console.client.get("/admin/jobs", params=params, headers=ADMIN)
        assert [j["id"] for j in api.json()["data"]] == shown, params  # the same rows
        return shown

    assert await ids(status="queued") == [queued.id]
    assert await ids(account=str(first_account)) == [done.id, queued.id]
    assert await ids(account=str(second_account)) == [failed.id]
    assert await ids(model="m1") == [failed.id, queued.id]
    assert await ids(model="m1", account=str(first_account), status="queued") == [queued.id]
    assert await ids(model="m3") == []
    assert await ids(limit="2") == [failed.id, done.id]
    # A filter form left blank is no filter.
    blank = await page(console, "/admin/console/jobs", status="", account="", model="")
    assert rows(blank, "jobs", "job") == [failed.id, done.id, queued.id]

    for name in ("status", "account", "model", "limit"):
        for odd in HOSTILE:
            assert (await page(console, "/admin/console/jobs", **{name: odd})).status_code \
                in (200, 400), (name, odd)
    for name, odd in (("status", "lost"), ("account", "0"), ("account", "x"),
                      ("model", "m" * 129), ("model", "m\x00")):
        refused = await page(console, "/admin/console/jobs", **{name: odd})
        assert refused.status_code == 400 and f"'{name}'" in text(refused), (name, odd)
        assert 'aria-current="page">Jobs' in refused.text  # the console's page, not JSON


async def test_webhook_events_by_type_and_whether_ignored_with_deliveries_counted(
        console: InProcessPortal) -> None:
    completed = await WebhookEvent.create(id="evt_1", type="checkout.session.completed",
                                          outcome="credited 5.000000 to account 1")
    ignored = await WebhookEvent.create(id="evt_2", type="customer.created", outcome="ignored")
    refunded = await WebhookEvent.create(id="evt_3", type="charge.refunded",
                                         outcome="refund re_1: took 1.000000 from account 1")
    failed_before = metrics.WEBHOOKS.labels("stripe", "failed")._value.get()

    answer = await page(console, "/admin/console/webhooks")
    assert rows(answer, "webhooks", "event") == [refunded.id, ignored.id, completed.id]
    assert "refund re_1: took 1.000000 from account 1" in text(answer)

    async def ids(**params: str) -> list[str]:
        shown = rows(await page(console, "/admin/console/webhooks", **params), "webhooks",
                     "event")
        api = await console.client.get("/admin/payments/events", params=params,
                                       headers=ADMIN)
        assert [e["id"] for e in api.json()["data"]] == shown, params
        return shown

    assert await ids(type="charge.refunded") == [refunded.id]
    assert await ids(ignored="true") == [ignored.id]
    assert await ids(ignored="false") == [refunded.id, completed.id]
    assert await ids(ignored="false", limit="1") == [refunded.id]
    assert await ids(type="invoice.paid") == []

    # Failed deliveries are not recorded; the page counts them from portal_webhooks_total.
    metrics.WEBHOOKS.labels("stripe", "failed").inc()
    counted = (await page(console, "/admin/console/webhooks")).text
    figure = counted.split('data-outcome="failed"', 1)[1].split("</div>", 2)[0]
    assert re.search(r'class="value">(\d+)', figure)[1] == str(int(failed_before) + 1)
    assert 'figure alarm" data-outcome="failed"' in counted

    for name in ("type", "ignored", "limit"):
        for odd in HOSTILE:
            assert (await page(console, "/admin/console/webhooks", **{name: odd})
                    ).status_code in (200, 400), (name, odd)
    assert (await page(console, "/admin/console/webhooks", ignored="maybe")).status_code == 400


async def test_the_ledger_by_reference_account_and_kind_page_after_page(
        console: InProcessPortal) -> None:
    _key, mine = await account_of(console, "0")
    _other, theirs = await account_of(console, "0")
    await ledger_row(console, mine, 5_000_000, "t:1", kind=LedgerKind.TOPUP, note="five")
    await ledger_row(console, theirs, 2_000_000, "t:2", kind=LedgerKind.TOPUP)
    await ledger_row(console, mine, -1_250_000, "t:3", note="goodwill <i>back</i>")
    await ledger_row(console, mine, 750_000, "t:4")
    await ledger_row(console, mine, 10_000, "other:5")
    ids = {row.reference: str(row.id) for row in await LedgerEntry.filter(
        reference__in=["t:1", "t:2", "t:3", "t:4", "other:5"])}

    async def shown(**params: str) -> list[str]:
        found = rows(await page(console, "/admin/console/ledger", **params), "ledger", "row")
        api_params = dict(params)
        if api_params.pop("match", "") == "prefix":
            api_params["reference_prefix"] = api_params.pop("reference")
        api = await console.client.get("/admin/ledger", params=api_params, headers=ADMIN)
        assert [str(r["id"]) for r in api.json()["data"]] == found, params  # the same rows
        return found

    assert await shown(reference="t:3") == [ids["t:3"]]
    assert await shown(reference="t:", match="prefix") == [ids["t:4"], ids["t:3"],
                                                           ids["t:2"], ids["t:1"]]
    assert await shown(reference="t:") == []  # exact unless asked
    assert await shown(reference_prefix="t:", account=str(mine)) == [ids["t:4"], ids["t:3"],
                                                                     ids["t:1"]]
    assert await shown(reference="t:", match="prefix", kind="topup") == [ids["t:2"],
                                                                        ids["t:1"]]
    assert await shown(account=str(theirs), kind="adjustment") == []

    # Amounts in USD; what was taken is marked, and notes are text.
    answer = await page(console, "/admin/console/ledger", reference_prefix="t:")
    taken = answer.text.split('data-reference="t:3"', 1)[1].split("</tr>", 1)[0]
    assert 'amount negative">-1.250000' in taken and "goodwill &lt;i&gt;back&lt;/i&gt;" in taken
    given = answer.text.split('data-reference="t:4"', 1)[1].split("</tr>", 1)[0]
    assert 'amount">0.750000' in given and "negative" not in given

    # Paging: each page ends at a row, the next starts below it; none twice, none missed.
    seen: list[str] = []
    path: str | None = "/admin/console/ledger?account=" + str(mine) + "&limit=2"
    while path:
        answer = await page(console, unescape(path))
        seen += rows(answer, "ledger", "row")
        older = re.search(r'<a href="([^"]+)" rel="next">', answer.text)
        path = older[1] if older else None
        if path:
            assert "account=" + str(mine) in unescape(path)  # the filters are kept
    assert seen == [ids["other:5"], ids["t:4"], ids["t:3"], ids["t:1"]]
    last = await page(console, "/admin/console/ledger", account=str(mine), limit="2",
                      before=ids["t:3"])
    assert rows(last, "ledger", "row") == [ids["t:1"]] and 'rel="next"' not in last.text
    assert 'rel="first"' in last.text

    for name in ("reference", "reference_prefix", "account", "kind", "before", "limit",
                 "match"):
        for odd in HOSTILE:
            assert (await page(console, "/admin/console/ledger", **{name: odd})
                    ).status_code in (200, 400), (name, odd)
    for params in ({"kind": "gift"}, {"account": "-1"}, {"before": "abc"},
                   {"reference": "r" * 201}, {"reference": "a", "reference_prefix": "b"}):
        assert (await page(console, "/admin/console/ledger", **params)).status_code == 400


async def test_payments_by_status_and_account_and_one_payments_whole_story(
        console: InProcessPortal) -> None:
    from edge.payments.handlers import given_back_reference, refund_reference, topup_reference

    _key, mine = await account_of(console)
    _other, theirs = await account_of(console)
    sid = "cs_test_story"
    story = await Payment.create(account_id=mine, session_id=sid, amount=25_000_000,
                                 paid=25_000_000, refunded=5_000_000, payment_intent="pi_1",
                                 charge_id="ch_1", status=PaymentStatus.DISPUTED)
    refund = refund_reference(sid, "re_1")
    # What Stripe's events did, in the order they came, each row as its handler makes it.
    happened: list[Callable[[], Awaitable[Any]]] = [
        lambda: ledger_row(console, mine, 25_000_000, topup_reference(sid),
                           kind=LedgerKind.TOPUP, note="Stripe Checkout"),
        lambda: WebhookEvent.create(id="evt_paid", type="checkout.session.completed",
                                    outcome=f"credited 25.000000 to account {mine}"),
        lambda: ledger_row(console, mine, -5_000_000, refund, kind=LedgerKind.REFUND,
                           note="Stripe refund re_1"),
        lambda: WebhookEvent.create(id="evt_refund", type="charge.refunded", outcome=(
            f"refunded 5.000000 of account {mine}: debited 5.000000 now, 0.000000 to "
            "collect from open reservations, shortfall 0.000000")),
        lambda: ledger_row(console, mine, 5_000_000, given_back_reference(refund),
                           note="refund re_1 failed"),
        lambda: WebhookEvent.create(id="evt_refund_failed", type="refund.failed",
                                    outcome="refund re_1 failed: given back"),
        lambda: WebhookEvent.create(id="evt_dispute", type="charge.dispute.created",
                                    outcome=f"account {mine} frozen by dispute dp_1"),
        lambda: ledger_row(console, mine, -10_000_000, f"dispute:{sid}:dp_1",
                           kind=LedgerKind.REFUND, note="Stripe dispute dp_1 lost"),
        lambda: WebhookEvent.create(id="evt_lost", type="charge.dispute.closed", outcome=(
            f"dispute dp_1 lost; account {mine} debited 10.000000 of 10.000000 now")),
    ]
    for happen in happened:
        await asyncio.sleep(0.003)  # a ledger row's time is Redis's, to the millisecond
        await happen()
    open_one = await Payment.create(account_id=mine, session_id="cs_test_open",
                                    amount=5_000_000, checkout_url="https://stripe.test/pay")
    theirs_one = await Payment.create(account_id=theirs, session_id="cs_test_theirs",
                                      amount=7_000_000, paid=7_000_000,
                                      status=PaymentStatus.PAID)

    async def listed(**params: str) -> list[str]:
        found = rows(await page(console, "/admin/console/payments", **params), "payments",
                     "payment")
        api_params = {("account_id" if k == "account" else k): v for k, v in params.items()}
        api = await console.client.get("/admin/payments", params=api_params, headers=ADMIN)
        assert [str(p["payment_id"]) for p in api.json()["data"]] == found, params
        return found

    assert await listed() == [str(theirs_one.id), str(open_one.id), str(story.id)]
    assert await listed(status="disputed") == [str(story.id)]
    assert await listed(account=str(mine)) == [str(open_one.id), str(story.id)]
    assert await listed(account=str(theirs), status="created") == []
    assert await listed(limit="1") == [str(theirs_one.id)]
    listing = await page(console, "/admin/console/payments", status="disputed")
    shown = listing.text.split(f'data-payment="{story.id}"', 1)[1].split("</tr>", 1)[0]
    assert "25.000000" in shown and "10.000000" in shown  # asked, taken back (the dispute)
    assert f'href="/admin/console/payments/{story.id}"' in shown

    by_id = await page(console, f"/admin/console/payments/{story.id}")
    by_session = await page(console, f"/admin/console/payments/{sid}")
    assert by_id.status_code == by_session.status_code == 200
    assert rows(by_id, "story", "moment") == rows(by_session, "story", "moment") == [
        "session", "ledger", "event", "ledger", "event", "ledger", "event", "event",
        "ledger", "event"]
    body = by_id.text.split('id="story"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-(?:reference|id)="([^"]+)"', body) == [
        sid, topup_reference(sid), "evt_paid", refund, "evt_refund", given_back_reference(refund),
        "evt_refund_failed", "evt_dispute", f"dispute:{sid}:dp_1", "evt_lost"]
    words = text(by_id)
    for said in ("refund re_1 failed: given back", "Stripe dispute dp_1 lost",
                 f"account {mine} frozen by dispute dp_1", "pi_1", "ch_1", "disputed"):
        assert said in words, said
    refunds = by_id.text.split('id="refunds"', 1)[1].split("</table>", 1)[0]
    assert 'data-refund="re_1"' in refunds and refunds.count("5.000000") == 2  # and back
    assert 'data-dispute="dp_1"' in by_id.text
    # Each ledger row links to the ledger page, which finds it and links back.
    link = f'/admin/console/ledger?reference={refund.replace(":", "%3A")}'
    assert f'href="{link}"' in body
    ledger = await page(console, link)
    (row_id,) = rows(ledger, "ledger", "row")
    assert row_id == str((await LedgerEntry.get(reference=refund)).id)
    assert f'href="/admin/console/payments/{sid}"' in ledger.text
    # The page shows what the API's story holds.
    api = (await console.client.get(f"/admin/payments/{story.id}", headers=ADMIN)).json()
    assert [e["id"] for e in api["events"]][::-1] == [
        m for m in re.findall(r'data-id="([^"]+)"', body) if m.startswith("evt_")]

    for missing in ("999999", "cs_test_nope", "99999999999999999999999", "0", "-1",
                    "x" * 300, "%00", "cs%00x", "%E2%80%AE", "'%20OR%201=1"):
        answer = await page(console, f"/admin/console/payments/{missing}")
        assert answer.status_code == 404, missing
        assert "No payment" in text(answer) and 'aria-current="page">Payments' in answer.text
    for name in ("status", "account", "limit"):
        for odd in HOSTILE:
            assert (await page(console, "/admin/console/payments", **{name: odd})
                    ).status_code in (200, 400), (name, odd)
    assert (await page(console, "/admin/console/payments", status="lost")).status_code == 400
