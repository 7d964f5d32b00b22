"""A real browser (Debian's Chromium, driven by Playwright) through the pages and the chat."""

from __future__ import annotations

import re

from tests.support.standard import Deployment


def test_get_a_key_log_in_chat_and_pay_for_it(chromium, room_portal: Deployment) -> None:
    from playwright.sync_api import expect

    context = chromium.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Get a key: shown once, with a copy button.
    page.goto(room_portal.url + "/")
    page.click("text=Get a key")
    page.fill("input[name=name]", "Browsy")
    page.click("button[type=submit]")
    secret = page.inner_text("#secret")
    assert re.fullmatch(r"sk-ip-\S+", secret)
    expect(page.locator("button.copy")).to_be_visible()

    # Log in with it in a fresh browser (no session yet).
    fresh = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    fresh.on("pageerror", lambda error: errors.append(str(error)))
    fresh.goto(room_portal.url + "/login")
    fresh.fill("input[name=key]", secret)
    fresh.click("button[type=submit]")
    fresh.wait_for_url("**/account")
    expect(fresh.locator("#balance")).to_have_text("$1.000000")

    # Open a room, send a message, watch the reply stream in and the balance drop.
    fresh.goto(room_portal.url + "/chat")
    fresh.fill("#join-room input[name=room]", "browser-room")
    fresh.click("#join-room button[type=submit]")
    fresh.wait_for_url("**/chat/browser-room")
    expect(fresh.locator("#conn")).to_have_text("connected")
    fresh.fill("#composer textarea[name=text]", "Hello from a **browser**")
    fresh.click("#settings summary")  # the model's settings are folded away
    fresh.fill("#composer input[name=max_tokens]", "12")
    fresh.press("#composer textarea[name=text]", "Enter")
    expect(fresh.locator(".msg.user .body strong")).to_have_text("browser")
    reply = fresh.locator(".msg.assistant").last
    expect(reply.locator(".meta")).to_contain_text("12 tokens", timeout=20_000)
    assert len(reply.locator(".body").inner_text().split()) == 12
    balance = fresh.locator("#balance").inner_text()
    assert balance.startswith("$0.99") and balance != "$1.000000"

    # Markdown is rendered from escaped text: HTML in a message stays text.
    fresh.uncheck("#composer input[name=ask]")
    fresh.fill("#composer textarea[name=text]", '<img src=x onerror="window.pwned=1"> hi')
    fresh.press("#composer textarea[name=text]", "Enter")
    expect(fresh.locator(".msg.user").last).to_contain_text("<img src=x")
    assert fresh.locator(".messages img").count() == 0
    assert fresh.evaluate("window.pwned === undefined")

    # The other browser (the phone) sees the same room.
    page.goto(room_portal.url + "/chat/browser-room")
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(page.locator("#composer textarea[name=text]")).to_be_visible()
    assert errors == []
    context.close()
