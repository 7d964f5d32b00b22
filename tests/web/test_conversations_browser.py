"""The chat's conversations in a real browser (Chromium): the sidebar, alternatives, reading,
exports, share links, the phone layout, and hostile text that must stay text.

The same behaviour is tested over HTTP and the socket in tests/chat/test_conversations.py
and tests/chat/test_alternatives.py; here it is what a person sees and clicks. Each test
signs in with fresh keys (accounts), so the tests do not depend on one another. Every
request a page makes must go to the portal (no CDN, no third party). Screenshots go to
the test artefacts directory (``PORTAL_TEST_ARTIFACTS``, by default build/test-artifacts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.support.deployment import Deployment
from tests.web.test_key_management import ARTIFACTS

#: A reply's line under it once it has ended: tokens in and out, then its cost.
DONE = re.compile(r"^\d+ \+ [1-9]\d* tokens · \$0\.\d{6}")


class Browser:
    """A browser context signed in (or not) with what its pages did: requests and errors."""

    def __init__(self, browser: Any, portal: Deployment, *, secret: str | None = None,
                 viewport: tuple[int, int] = (1280, 900), state: Any = None) -> None:
        self.portal = portal
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.asked: list[str] = []
        self.context = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True,
            storage_state=state)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.url)
        self.page = self.new_page()
        if secret is not None:
            self.page.goto(portal.url + "/login")
            self.page.fill("input[name=key]", secret)
            self.page.click("button[type=submit]")
            self.page.wait_for_url("**/account")

    def new_page(self) -> Any:
        page = self.context.new_page()
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda socket: self.requests.append(
            re.sub(r"^ws(s?)://", r"http\1://", socket.url)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.on("response", lambda response: response.status >= 400 and "/static/" in response.url
                and self.errors.append(f"{response.status} {response.url}"))
        page.on("dialog", self._confirm)
        return page

    def _console(self, message: Any) -> None:
        """Errors in the console (CSP refusals, say); pages the tests expect refused aside."""
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _confirm(self, dialog: Any) -> None:
        """Say yes to a confirmation (deleting), and keep what it asked."""
        self.asked.append(dialog.message)
        dialog.accept()

    def close(self) -> None:
        """Check what the pages did, then close: no script error, nothing off the portal."""
        self.context.close()
        assert self.errors == []
        assert self.requests  # recorded
        strangers = [url for url in self.requests
                     if not url.startswith((self.portal.url + "/", "data:", "blob:"))]
        assert strangers == []


def signed_in(chromium: Any, portal: Deployment, **options: Any) -> Browser:
    _, secret = portal.key("5")
    return Browser(chromium, portal, secret=secret, **options)


def balance(page: Any) -> float:
    return float(page.inner_text("#balance").lstrip("$"))


def new_chat(page: Any, portal: Deployment) -> str:
    """Start a conversation from the sidebar; its name."""
    page.goto(portal.url + "/chat")
    page.click("#new-chat")
    page.wait_for_url(re.compile(r"/chat/p-[A-Za-z0-9-]+$"))
    wait_connected(page)
    return page.url.rsplit("/", 1)[1]


def wait_connected(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#conn")).to_have_text("connected")


def set_max_tokens(page: Any, tokens: int) -> None:
    page.click("#settings summary")
    page.fill("#composer input[name=max_tokens]", str(tokens))
    page.click("#settings summary")


def say(page: Any, text: str, *, ask: bool = True) -> None:
    """Send a message; with ``ask``, wait until the model's reply to it has ended."""
    from playwright.sync_api import expect

    page.locator("#composer input[name=ask]").set_checked(ask)
    replies = page.locator(".msg.assistant").count()
    said = page.locator(".msg.user").count()
    page.fill("#composer textarea[name=text]", text)
    page.press("#composer textarea[name=text]", "Enter")
    expect(page.locator(".msg.user")).to_have_count(said + 1)
    if ask:
        expect(page.locator(".msg.assistant")).to_have_count(replies + 1)
        expect(page.locator(".msg.assistant").last.locator(".meta .info")).to_have_text(
            DONE, timeout=20_000)


def shown(page: Any, role: str) -> Any:
    return page.locator(f"#messages .msg.{role}:not([hidden])")


def ids(locator: Any) -> list[int]:
    return [int(i) for i in locator.evaluate_all("nodes => nodes.map(n => n.dataset.id)")]


def in_view(page: Any, selector: str) -> bool:
    """Whether the element is on the screen as it is, without scrolling."""
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"] \
        and box["x"] >= 0 and box["x"] + box["width"] <= size["width"]


def sidebar(page: Any) -> list[str]:
    return page.locator("#conversation-list li").evaluate_all(
        "items => items.map(i => i.dataset.name)")


def expect_sidebar(page: Any, names: list[str]) -> None:
    """Wait until the sidebar lists exactly ``names``, in that order."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "names => JSON.stringify([...document.querySelectorAll('#conversation-list li')]"
            ".map(i => i.dataset.name)) === JSON.stringify(names)", arg=names, timeout=5000)
    except PlaywrightTimeout:
        assert sidebar(page) == names


def search(page: Any, query: str) -> None:
    """Type into the search box and wait for the list the server sent for it."""
    with page.expect_response(lambda r: "/api/conversations?q=" in r.url or (
            not query and r.url.endswith("/api/conversations"))):
        page.fill("#search", query)


def test_the_sidebar_new_title_rename_pin_search_delete_restore_and_privacy(
        chromium, room_portal: Deployment) -> None:
    from playwright.sync_api import expect

    alice = signed_in(chromium, room_portal)
    page = alice.page
    lisbon = new_chat(page, room_portal)
    item = page.locator(f"#conversation-list li[data-name='{lisbon}']")
    say(page, "Plans for the Lisbon trip", ask=False)
    expect(item.locator(".title")).to_have_text("Plans for the Lisbon trip")  # its first words
    expect(page.locator("#room-title")).to_have_text("Plans for the Lisbon trip")
    expect(item).to_have_class("active")

    taxes = new_chat(page, room_portal)
    say(page, "How do I file a deduction for my home office?", ask=False)
    expect(page.locator(f"#conversation-list li[data-name='{taxes}'] .title")).to_have_text(
        "How do I file a deduction for my home office?")
    expect_sidebar(page, [taxes, lisbon])  # the newest first

    # Rename inline; a title is text, also when it looks like markup.
    page.click("#rename")
    expect(page.locator("#rename-form")).to_be_visible()
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> Taxes'
    page.fill("#rename-form input[name=title]", hostile)
    page.click("#rename-form button[type=submit]")
    expect(page.locator("#room-title")).to_have_text(hostile)
    expect(page.locator(f"#conversation-list li[data-name='{taxes}'] .title")).to_have_text(
        hostile)
    assert page.locator("#sidebar img, .room-head img").count() == 0
    page.reload()  # as the server renders it, too
    expect(page.locator("#room-title")).to_have_text(hostile)
    assert page.evaluate("window.pwned === undefined")
    page.click("#rename")
    page.fill("#rename-form input[name=title]", "Taxes 2024")
    page.press("#rename-form input[name=title]", "Enter")
    expect(page.locator("#room-title")).to_have_text("Taxes 2024")
    expect(page).to_have_title(re.compile("^Taxes 2024 · Chat"))

    # Pin the older one: it moves to the top, with a star.
    page.goto(room_portal.url + f"/chat/{lisbon}")
    wait_connected(page)
    page.click("#pin")
    expect(page.locator("#pin")).to_have_text("Unpin")
    expect(page.locator("#conversation-list li").first.locator(".pin")).to_have_text("★")
    expect_sidebar(page, [lisbon, taxes])
    page.reload()
    expect(page.locator("#pin")).to_have_text("Unpin")
    expect_sidebar(page, [lisbon, taxes])

    # Search titles, and message text (with a snippet of where it was found).
    search(page, "lisbon")
    expect(page.locator("#conversation-list li")).to_have_count(1)
    expect_sidebar(page, [lisbon])
    search(page, "HOME OFFICE")
    expect_sidebar(page, [taxes])
    expect(page.locator("#conversation-list li .match")).to_contain_text(
        "deduction for my home office")
    search(page, "nothing like this")
    expect(page.locator("#conversation-list li")).to_have_count(0)
    expect(page.locator("#no-results")).to_have_text("No conversation matches.")
    search(page, "")
    expect(page.locator("#conversation-list li")).to_have_count(2)

    # Another account: none of it in its list or its search; the URLs are not found.
    bob = signed_in(chromium, room_portal)
    other = bob.page
    mine = new_chat(other, room_portal)
    say(other, "bob plans Lisbon too", ask=False)
    expect_sidebar(other, [mine])
    search(other, "lisbon")
    expect_sidebar(other, [mine])
    search(other, "home office")
    expect_sidebar(other, [])
    for path in (f"/chat/{lisbon}", f"/chat/{taxes}"):
        refused = other.goto(room_portal.url + path)
        assert refused.status == 404
        expect(other.locator("main")).not_to_contain_text("Lisbon trip")
    for path in (f"/api/conversations/{taxes}/export",
                 f"/api/conversations/{taxes}/export?format=json"):
        refused = other.goto(room_portal.url + path)
        assert refused.status == 404 and "home office" not in refused.text()
    # A public room is left, not deleted: it goes off the list only.
    other.goto(room_portal.url + "/chat/" + lisbon.replace("p-", "town-"))
    wait_connected(other)
    expect(other.locator("#delete")).to_have_text("Leave")
    expect(other.locator("#conversation-list li")).to_have_count(2)
    with other.expect_navigation(url=re.compile(r"/chat$")):
        other.click("#delete")
    assert bob.asked == ["Leave this room? It goes off your list; join it again to bring it back."]
    expect_sidebar(other, [mine])
    assert any("/ws/chat/" in url for url in bob.requests)
    bob.close()

    # Delete (confirmed): off the list, into Recently deleted; Restore brings it back.
    page.goto(room_portal.url + f"/chat/{taxes}")
    wait_connected(page)
    with page.expect_navigation(url=re.compile(r"/chat$")):
        page.click("#delete")
    assert alice.asked == ["Delete this conversation? You can restore it from Recently deleted."]
    expect_sidebar(page, [lisbon])
    page.click("#bin summary")
    deleted = page.locator(f"#deleted-list li[data-name='{taxes}']")
    expect(deleted.locator(".title")).to_have_text("Taxes 2024")
    assert page.locator(f"#deleted-list li[data-name='{lisbon}']").count() == 0
    with page.expect_navigation(url=re.compile(f"/chat/{taxes}$")):
        deleted.locator("button.restore").click()
    wait_connected(page)
    expect(page.locator(".msg.user")).to_have_text(re.compile("home office"))
    expect_sidebar(page, [lisbon, taxes])
    alice.close()


def test_regenerate_and_edit_keep_alternatives_to_flip_through(
        chromium, room_portal: Deployment) -> None:
    from playwright.sync_api import expect

    alice = signed_in(chromium, room_portal)
    page = alice.page
    new_chat(page, room_portal)
    set_max_tokens(page, 4)
    start = balance(page)
    say(page, "Name a colour.")
    first = ids(shown(page, "assistant"))
    assert len(first) == 1
    info = page.locator(".msg.assistant .meta .info").inner_text()
    assert re.match(r"^\d+ \+ 4 tokens · \$0\.0000\d\d · talker$", info), info
    after_one = balance(page)
    assert after_one < start

    # Regenerate: the reply set aside, a new one streams beside it, "2/2" to flip.
    page.click(".msg.assistant .actions .regenerate")
    expect(shown(page, "assistant")).to_have_count(1)
    expect(page.locator(".msg.assistant")).to_have_count(2)
    second = ids(shown(page, "assistant"))
    assert second != first
    reply = page.locator(f".msg.assistant[data-id='{second[0]}']")
    expect(reply.locator(".meta .info")).to_have_text(DONE, timeout=20_000)
    expect(reply.locator(".variants .count")).to_have_text("2/2")
    expect(reply.locator(".variants .next")).to_be_disabled()
    after_two = balance(page)
    assert after_two < after_one  # each generation is paid for
    reply.locator(".variants .prev").click()
    expect(page.locator(f".msg.assistant[data-id='{first[0]}']")).to_be_visible()
    expect(reply).to_be_hidden()
    assert ids(shown(page, "assistant")) == first
    again = page.locator(f".msg.assistant[data-id='{first[0]}']")
    expect(again.locator(".variants .count")).to_have_text("1/2")
    page.reload()  # the choice is the conversation's, not the page's
    wait_connected(page)
    assert ids(shown(page, "assistant")) == first
    expect(again.locator(".variants .count")).to_have_text("1/2")

    # Edit the question: the new version is shown and answered, the old one flips back.
    question = ids(shown(page, "user"))
    set_max_tokens(page, 4)
    page.click(".msg.user .actions .edit")
    editor = page.locator(".msg.user .edit-form textarea")
    expect(editor).to_have_value("Name a colour.")
    editor.fill("Name a **warm** colour.")
    page.click(".msg.user .edit-form button[type=submit]")
    expect(shown(page, "user")).to_have_count(1)
    expect(shown(page, "user").locator(".body strong")).to_have_text("warm")
    version = ids(shown(page, "user"))
    assert version != question
    expect(shown(page, "user").locator(".variants .count")).to_have_text("2/2")
    expect(shown(page, "assistant")).to_have_count(1)
    answer = shown(page, "assistant")
    expect(answer.locator(".meta .info")).to_have_text(DONE, timeout=20_000)
    answered = ids(answer)
    assert answered[0] not in first + second
    assert balance(page) < after_two
    shown(page, "user").locator(".variants .prev").click()
    expect(page.locator(f".msg.user[data-id='{question[0]}']")).to_be_visible()
    expect(page.locator(f".msg.user[data-id='{version[0]}']")).to_be_hidden()
    expect(shown(page, "user")).to_have_text(re.compile("Name a colour."))
    expect(shown(page, "user").locator(".variants .count")).to_have_text("1/2")
    back = ids(shown(page, "assistant"))
    assert len(back) == 1 and back[0] in first + second  # the first version's own reply
    expect(page.locator(f".msg.assistant[data-id='{answered[0]}']")).to_be_hidden()

    # Stop a long reply: it ends at once, stopped, and is paid for as far as it went.
    set_max_tokens(page, 400)
    before = balance(page)
    page.locator("#composer input[name=ask]").check()
    page.fill("#composer textarea[name=text]", "Tell me a long story.")
    page.press("#composer textarea[name=text]", "Enter")
    expect(page.locator("#stop")).to_be_visible()
    expect(shown(page, "assistant").last.locator(".body")).not_to_be_empty()
    page.click("#stop")
    stopped = shown(page, "assistant").last.locator(".meta .info")
    expect(stopped).to_have_text(re.compile(r"^stopped · \d+ \+ \d+ tokens"))
    expect(page.locator("#stop")).to_be_hidden()
    assert int(stopped.inner_text().split(" + ")[1].split()[0]) < 400
    assert balance(page) < before
    alice.close()


CODE = 'def square(x):\n    return x ** 2  # <b>not bold</b>\n\nprint(square(3))'
READING = f"""Some **code**:

```python
{CODE}
```

| City | Days |
| --- | ---: |
| Lisbon | 3 |
| Porto | 2 |

And math: $x^2$ inline."""
XSS = ('<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> '
       '[click](javascript:window.pwned=3) <svg onload="window.pwned=4">')


def test_reading_code_tables_math_hostile_text_and_the_phone_layout(
        chromium, room_portal: Deployment) -> None:
    from playwright.sync_api import expect

    alice = signed_in(chromium, room_portal)
    page = alice.page
    room = new_chat(page, room_portal)
    set_max_tokens(page, 12)
    say(page, "Tell me about Lisbon in a few words.")

    # Hostile text in a message is shown as text: nothing runs, no element is made.
    say(page, XSS, ask=False)
    hostile = page.locator(".msg.user").last
    expect(hostile.locator(".body")).to_contain_text("<script>window.pwned=1</script>")
    expect(hostile.locator(".body")).to_contain_text('<img src=x onerror="window.pwned=2">')
    assert hostile.locator("a[href^=javascript]").count() == 0

    # Code (highlighted, with a button that copies it), a table, and math.
    say(page, READING, ask=False)
    message = page.locator(".msg.user").last
    code = message.locator(".code-block pre code")
    expect(code).to_have_class(re.compile(r"\blanguage-python\b"))
    assert code.locator("span[class^=hljs-]").count() > 0  # highlighted
    assert code.inner_text() == CODE
    message.locator(".code-block button.copy-code").click()
    expect(message.locator(".code-block button.copy-code")).to_have_text(re.compile("Copied"))
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    table = message.locator("table")
    expect(table.locator("th")).to_have_text(["City", "Days"])
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("tbody tr").first.locator("td")).to_have_text(["Lisbon", "3"])
    expect(message.locator(".katex")).to_have_count(1)
    assert "x" in message.locator(".katex .katex-html").inner_text()
    assert page.locator("#messages img, #messages svg:not(.katex *), #messages script").count() \
        == 0
    assert page.evaluate("window.pwned === undefined")
    # A room name that is markup is refused before any page is made of it.
    refused = alice.new_page()
    answer = refused.goto(room_portal.url + "/chat/%3Cscript%3Ewindow.pwned=1%3C%2Fscript%3E")
    assert answer.status == 400
    expect(refused.locator("main")).to_contain_text("Room names are")
    assert refused.evaluate("window.pwned === undefined")
    refused.close()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-desktop.png"))

    # The phone: the list behind ☰, the composer in view, nothing wider than the screen.
    phone = Browser(chromium, room_portal, viewport=(390, 844),
                    state=alice.context.storage_state())
    small = phone.page
    small.goto(room_portal.url + f"/chat/{room}")
    wait_connected(small)
    expect(small.locator(".msg.assistant")).to_have_count(1)
    expect(small.locator("#sidebar")).to_be_hidden()
    expect(small.locator("#composer textarea[name=text]")).to_be_visible()
    assert in_view(small, "#composer #send") and in_view(small, "#room-title")
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(ARTIFACTS / "chat-phone.png"))
    small.click("#open-sidebar")
    expect(small.locator("#sidebar")).to_be_visible()
    expect(small.locator(f"#conversation-list li[data-name='{room}']")).to_be_visible()
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(ARTIFACTS / "chat-phone-sidebar.png"))
    small.click("#close-sidebar")
    expect(small.locator("#sidebar")).to_be_hidden()
    expect(small.locator("#composer textarea[name=text]")).to_be_visible()
    small.click("#settings summary")  # the settings fit too
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    assert in_view(small, "#composer #send")
    small.screenshot(path=str(ARTIFACTS / "chat-phone-settings.png"))
    # A reader scrolled up stays where they are when others speak (here: the phone).
    page.eval_on_selector("#messages", "box => { box.scrollTop = 0; }")
    # (Functions, not expressions: the page's CSP refuses the eval an expression needs.)
    page.wait_for_function("() => document.getElementById('messages').scrollTop === 0")
    assert page.eval_on_selector("#messages", "box => box.scrollHeight > box.clientHeight")
    say(small, "Said on the phone", ask=False)
    expect(page.locator(".msg.user").last).to_have_text(re.compile("Said on the phone"))
    assert page.eval_on_selector("#messages", "box => box.scrollTop") == 0
    say(page, "Back at the desk", ask=False)  # your own message brings you down
    page.wait_for_function("() => (box => box.scrollHeight - box.scrollTop - box.clientHeight "
                           "< 2)(document.getElementById('messages'))")
    small.goto(room_portal.url + "/chat")  # the lobby shows the list at once
    expect(small.locator("#sidebar")).to_be_visible()
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    phone.close()
    alice.close()


def test_export_and_share_a_snapshot_then_revoke_it(
        chromium, room_portal: Deployment) -> None:
    from playwright.sync_api import expect

    alice = signed_in(chromium, room_portal)
    page = alice.page
    room = new_chat(page, room_portal)
    set_max_tokens(page, 5)
    say(page, "Which city first: Lisbon or Porto?")
    say(page, "A table:\n\n| City | Days |\n| --- | --- |\n| Lisbon | 3 |", ask=False)
    reply = page.locator(".msg.assistant .body").inner_text().strip()
    page.click("#rename")
    page.fill("#rename-form input[name=title]", "Trip: Lisbon/Porto")
    page.press("#rename-form input[name=title]", "Enter")
    expect(page.locator("#room-title")).to_have_text("Trip: Lisbon/Porto")

    # Exports: the file as downloaded, in both formats.
    page.click("#export-menu summary")
    with page.expect_download() as markdown:
        page.click("#export-md")
    assert markdown.value.suggested_filename == "trip-lisbon-porto.md"
    text = Path(markdown.value.path()).read_text()
    assert text.startswith("# Trip: Lisbon/Porto\n")
    assert "Which city first: Lisbon or Porto?" in text and "| Lisbon | 3 |" in text
    assert " ".join(reply.split()) in " ".join(text.split())
    assert re.search(r"\d+ \+ 5 tokens · \$0\.\d{6}", text)
    page.click("#export-menu summary")
    with page.expect_download() as exported:
        page.click("#export-json")
    assert exported.value.suggested_filename == "trip-lisbon-porto.json"
    data = json.loads(Path(exported.value.path()).read_text())
    assert data["title"] == "Trip: Lisbon/Porto" and data["name"] == room
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user"]
    assert data["messages"][0]["text"] == "Which city first: Lisbon or Porto?"
    assert data["messages"][1]["usage"]["completion_tokens"] == 5

    # Share: a link anyone may open, showing the conversation as it was then.
    page.click("#share")
    link = page.locator("#share-list .share-url").first
    expect(link).to_have_value(re.compile(r"/s/[A-Za-z0-9_-]{32}$"))
    url = link.input_value()
    assert url.startswith(room_portal.url + "/s/")
    expect(page.locator("#share-list li").first).to_contain_text("3 messages")
    stranger = Browser(chromium, room_portal)  # no session
    shared = stranger.page
    assert shared.goto(url).status == 200
    expect(shared.locator("#share-title")).to_have_text("Trip: Lisbon/Porto")
    expect(shared.locator(".msg")).to_have_count(3)
    expect(shared.locator(".msg.user").first).to_contain_text("Which city first")
    expect(shared.locator(".msg table td").first).to_have_text("Lisbon")  # rendered
    assert " ".join(reply.split()) in " ".join(
        shared.locator(".msg.assistant .body").inner_text().split())
    expect(shared.locator("header.top")).to_contain_text("Log in")  # nobody is signed in
    assert "tokens" not in shared.locator("#messages").inner_text()  # no costs
    shared.screenshot(path=str(ARTIFACTS / "chat-share.png"), full_page=True)
    shared.set_viewport_size({"width": 390, "height": 844})
    assert shared.evaluate("document.documentElement.scrollWidth") <= 390
    shared.screenshot(path=str(ARTIFACTS / "chat-share-phone.png"), full_page=True)
    shared.set_viewport_size({"width": 1280, "height": 900})

    say(page, "Said after the snapshot", ask=False)
    assert shared.reload().status == 200
    expect(shared.locator(".msg")).to_have_count(3)
    expect(shared.locator("#messages")).not_to_contain_text("after the snapshot")

    # Share again: the same link (a click makes none); "New link" is a later snapshot.
    page.click("#share")
    expect(page.locator("#share-panel")).to_be_hidden()
    page.click("#share")
    expect(page.locator("#share-list li")).to_have_count(1)
    assert link.input_value() == url
    page.click("#new-share")
    expect(page.locator("#share-list li")).to_have_count(2)
    expect(page.locator("#share-list li").first).to_contain_text("4 messages")
    later = page.locator("#share-list .share-url").first.input_value()
    assert later != url
    page.locator("#share-list li").nth(1).locator("button.revoke").click()
    expect(page.locator("#share-list li")).to_have_count(1)
    assert page.locator("#share-list .share-url").input_value() == later
    assert shared.reload().status == 404
    expect(shared.locator("#messages")).to_have_count(0)
    assert httpx.get(url, timeout=10).status_code == 404
    assert shared.goto(later).status == 200
    expect(shared.locator("#messages")).to_contain_text("Said after the snapshot")
    stranger.close()
    alice.close()

