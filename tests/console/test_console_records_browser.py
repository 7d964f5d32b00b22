"""The console's record pages in Chromium, reached through the nav: a job, a payment with
its story, its webhook event, an operator's credit found on the ledger by its reference
and in the audit log by its target, and a message sent from the contact page."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.console.conftest import ADMIN, artifacts
from tests.support.deployment import Deployment


def admin(deployment: Deployment, method: str, path: str, **kwargs: Any) -> Any:
    answer = httpx.request(method, deployment.url + path, headers=ADMIN, timeout=30, **kwargs)
    assert answer.status_code < 300, answer.text
    return answer.json()


def nav_to(page: Any, label: str) -> None:
    """Open a section by its link in the console's nav, as the operator does."""
    page.locator("header.top nav").get_by_role("link", name=label, exact=True).click()
    page.wait_for_selector(f"header.top nav a[aria-current=page]:text-is('{label}')")


def test_each_record_page_shows_its_known_row(console_page: Any,
                                              console_deployment: Deployment) -> None:
    page, deployment, url = console_page, console_deployment, console_deployment.url
    key_id, secret = deployment.key("1")
    account = admin(deployment, "GET", f"/admin/keys/{key_id}")["account"]
    reference = f"browser-goodwill:{uuid.uuid4().hex[:12]}"
    admin(deployment, "POST", f"/admin/accounts/{account}/credit",
          json={"usd": "2.50", "reference": reference, "note": "goodwill from the browser"})
    job = httpx.post(url + "/v1/jobs", headers={"authorization": f"Bearer {secret}"},
                     json={"model": "m1", "max_tokens": 4,
                           "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
    assert job.status_code == 202, job.text
    # Payments are off here (no Stripe): an expired session and its event, as the webhook
    # would have left them.
    session = f"cs_test_{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).isoformat(sep=" ")
    deployment.sql("INSERT INTO payments (account_id, session_id, payment_intent, charge_id, "
                   "amount, paid, refunded, currency, status, checkout_url, created_at, "
                   "updated_at) VALUES (?, ?, NULL, NULL, 5000000, 0, 0, 'usd', 'expired', "
                   "'', ?, ?)", account, session, now, now)
    event = f"evt_{uuid.uuid4().hex[:12]}"
    deployment.sql("INSERT INTO webhook_events (id, type, outcome, received_at) VALUES "
                   "(?, 'checkout.session.expired', ?, ?)", event, f"{session} expired", now)

    # A visitor writes while no mail server is set: the message is kept for the inbox.
    visitor = page.context.new_page()
    visitor.goto(url + "/contact")
    visitor.fill("input[name=name]", "Grace")
    visitor.fill("input[name=email]", "grace@example.com")
    visitor.fill("textarea[name=message]", f"Hello from {reference}")
    time.sleep(3.2)  # the form's time check: people take a few seconds
    visitor.click("button[type=submit]")
    visitor.wait_for_load_state()
    visitor.close()

    page.goto(url + "/admin/console")
    nav_to(page, "Jobs")
    assert "m1" in page.locator(f"tr[data-job='{job.json()['id']}']").inner_text()

    nav_to(page, "Payments")
    row = page.locator(f"#payments tr:has(code:text-is('{session}'))")
    assert "expired" in row.inner_text() and "5.000000" in row.inner_text()
    row.locator("a").first.click()
    page.wait_for_selector("#story")
    assert session in page.locator("#story tr[data-moment=session]").inner_text()
    story_event = page.locator(f"#story tr[data-id='{event}']")
    assert "checkout.session.expired" in story_event.inner_text()
    page.screenshot(path=str(artifacts("console-payment.png")), full_page=True)

    nav_to(page, "Webhooks")
    assert f"{session} expired" in page.locator(f"tr[data-event='{event}']").inner_text()

    nav_to(page, "Ledger")
    page.fill("form.filters input[name=reference]", reference)
    page.click("form.filters button[type=submit]")
    found = page.locator(f"#ledger tr[data-reference='{reference}']")
    assert "2.500000" in found.inner_text() and "goodwill from the browser" in found.inner_text()
    assert page.locator("#ledger tbody tr").count() == 1
    page.screenshot(path=str(artifacts("console-ledger.png")), full_page=True)

    nav_to(page, "Audit")
    page.fill("form.filters input[name=target]", f"account:{account}")
    page.fill("form.filters input[name=action]", "account.credit")
    page.click("form.filters button[type=submit]")
    entry = page.locator("#audit tbody tr").first
    assert "account.credit" in entry.inner_text() and "admin-api" in entry.inner_text()
    assert f'"reference": "{reference}"' in entry.locator("pre.json").last.inner_text()
    page.screenshot(path=str(artifacts("console-audit.png")), full_page=True)

    nav_to(page, "Inbox")
    message = page.locator(f"#inbox tr:has-text('Hello from {reference}')")
    assert "grace@example.com" in message.inner_text()
    assert "stored only" in message.inner_text()
