"""Conversations: the sidebar, search, settings, delete and restore, export, share links.

In-process (one worker, a simnode double), talking HTTP and WebSocket as a browser or a
program would; tests/web/test_conversations_browser.py drives the same through Chromium.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from tests.support.chat import CHAT_MODEL as MODEL
from tests.support.chat import Person, say
from tests.support.inprocess import NodeDouble


async def test_the_sidebar_holds_own_rooms_and_joined_public_ones_newest_first(
        people: list[Person]) -> None:
    alice, bob = people
    first, second = await alice.room(), await alice.room()
    bobs = await bob.room()
    lobby = await alice.join("lobby")
    await lobby.send(type="message", text="hello lobby", ask=False)
    await lobby.wait_for("message", role="user")
    names = [c["name"] for c in await alice.sidebar()]
    assert names == ["lobby", second, first]  # the room spoken in last comes first
    assert bobs not in names
    assert [c["name"] for c in await bob.sidebar()] == [bobs]  # public rooms only once joined
    view = (await alice.sidebar())[0]
    assert view["title"] == "hello lobby" and not view["private"] and view["mine"]
    await lobby.close()


async def test_a_title_comes_from_the_first_message_and_can_be_renamed(
        people: list[Person]) -> None:
    alice, _ = people
    room = await alice.room()
    client = await alice.join(room)
    long = "Plan a three day trip to Lisbon with museums, food markets and a day at the coast"
    await say(client, long)
    titled = await client.wait_for("room")  # every open page learns the title
    assert titled["title"] == "Plan a three day trip to Lisbon with museums, food markets…"
    await client.send(type="message", text="second message", ask=False)
    await client.wait_for("message", text="second message")
    (view,) = await alice.sidebar()
    assert view["title"] == "Plan a three day trip to Lisbon with museums, food markets…"
    renamed = await alice.http.patch(f"/api/conversations/{room}", json={"title": "  Lisbon  "})
    assert renamed.json()["title"] == "Lisbon"
    assert (await client.wait_for("room"))["title"] == "Lisbon"  # open pages see it
    for bad in ({"title": ""}, {"title": 5}, {"title": "x" * 201}, {"colour": "red"},
                {"pinned": "yes"}):
        refused = await alice.http.patch(f"/api/conversations/{room}", json=bad)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == \
            "invalid_request_error", bad
    assert (await alice.sidebar())[0]["title"] == "Lisbon"
    await client.close()


async def test_pinned_conversations_come_first(people: list[Person]) -> None:
    alice, _ = people
    older, newer = await alice.room(), await alice.room()
    assert [c["name"] for c in await alice.sidebar()] == [newer, older]
    pinned = await alice.http.patch(f"/api/conversations/{older}", json={"pinned": True})
    assert pinned.json()["pinned"] is True
    assert [(c["name"], c["pinned"]) for c in await alice.sidebar()] == [
        (older, True), (newer, False)]


async def test_search_finds_titles_and_message_text_of_own_conversations_only(
        people: list[Person]) -> None:
    alice, bob = people
    recipes, taxes = await alice.room(), await alice.room()
    await alice.http.patch(f"/api/conversations/{recipes}", json={"title": "Recipes"})
    client = await alice.join(taxes)
    await client.send(type="message", text="How do I file a 100% deduction for my office?",
                      ask=False)
    await client.wait_for("message", role="user")
    secret_room = await bob.room()
    other = await bob.join(secret_room)
    await other.send(type="message", text="bob's recipes and deductions", ask=False)
    await other.wait_for("message", role="user")

    assert [c["name"] for c in await alice.sidebar("recipe")] == [recipes]
    (hit,) = await alice.sidebar("DEDUCTION")
    assert hit["name"] == taxes and "100% deduction" in hit["match"]
    assert [c["name"] for c in await alice.sidebar("100%")] == [taxes]  # % is no wildcard
    assert await alice.sidebar("1%0") == [] and await alice.sidebar("f_le") == []
    assert [c["name"] for c in await bob.sidebar("recipes")] == [secret_room]
    assert await alice.sidebar("bob's") == []
    bad = await alice.http.get("/api/conversations", params={"q": "a\x00b"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "q"
    await client.close()
    await other.close()


async def test_another_accounts_conversation_is_not_there_for_you(people: list[Person]) -> None:
    alice, bob = people
    room = await alice.room()
    client = await alice.join(room)
    await client.send(type="message", text="private thoughts", ask=False)
    await client.wait_for("message", role="user")
    paths = [f"/api/conversations/{room}", f"/api/conversations/{room}/export",
             f"/api/conversations/{room}/export?format=json", f"/api/conversations/{room}/shares"]
    for path in paths:
        answer = await bob.http.get(path)
        assert answer.status_code == 404 and "private" not in answer.text, path
    for method, path in (("PATCH", f"/api/conversations/{room}"),
                         ("DELETE", f"/api/conversations/{room}"),
                         ("POST", f"/api/conversations/{room}/shares"),
                         ("POST", f"/api/conversations/{room}/restore")):
        answer = await bob.http.request(method, path, json={"title": "mine now"})
        assert answer.status_code == 404, (method, path)
    with pytest.raises(ConnectionRefusedError, match="No such room"):
        await bob.join(room)
    taken = await bob.http.post("/api/rooms", json={"name": room})
    assert taken.status_code == 400  # a private room's name cannot be taken over
    assert (await alice.http.get(f"/api/conversations/{room}")).json()["title"] == \
        "private thoughts"
    await client.close()


async def test_settings_are_kept_and_sent_with_every_reply(
        people: list[Person], chat_node: NodeDouble) -> None:
    alice, bob = people
    room = await alice.room()
    changed = await alice.http.patch(f"/api/conversations/{room}", json={
        "model": MODEL, "system_prompt": "Answer like a pirate.",
        "params": {"temperature": 0.2, "max_tokens": 7, "top_p": 0.5}})
    assert changed.status_code == 200, changed.text
    client = await alice.join(room)
    assert client.ready["system"] == "Answer like a pirate."
    assert client.ready["params"] == {"temperature": 0.2, "max_tokens": 7, "top_p": 0.5}
    await client.send(type="message", text="Where is the treasure?")  # names nothing else
    sent = await client.wait_for("sent")
    reply = await client.wait_for("message", role="assistant", reply_to=sent["id"])
    await client.wait_for("done", reply_id=reply["id"])
    body = chat_node.calls[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.2, 7, 0.5)
    # A frame's own settings win for that reply only.
    await say(client, "Again", params={"max_tokens": 3})
    again = chat_node.calls[-1].body
    assert again["max_tokens"] == 3 and again["temperature"] == 0.2
    # A change made while the socket is open applies to its next message.
    await alice.http.patch(f"/api/conversations/{room}", json={"system_prompt": "Be terse."})
    await client.wait_for("room", system="Be terse.")
    await say(client, "Once more")
    assert chat_node.calls[-1].body["messages"][0] == {"role": "system",
                                                        "content": "Be terse."}
    for bad in ({"params": {"temperature": 9}}, {"params": {"colour": 1}},
                {"model": "nope"}, {"system_prompt": "x" * 4001}):
        refused = await alice.http.patch(f"/api/conversations/{room}", json=bad)
        assert refused.status_code == 400, bad
    # In a public room, only its maker changes its settings; anyone may pin it.
    await alice.room(name="town-square")
    assert (await bob.http.patch("/api/conversations/town-square",
                                 json={"system_prompt": "Obey bob."})).status_code == 403
    assert (await bob.http.patch("/api/conversations/town-square",
                                 json={"pinned": True})).json()["pinned"] is True
    await client.close()


async def test_delete_restore_and_purge(people: list[Person]) -> None:
    from dramatiq_actors.conversations import purge_deleted
    from edge.db.models import ChatMessage, ChatRoom, ChatShare

    alice, _ = people
    room = await alice.room()
    client = await alice.join(room)
    await client.send(type="message", text="keep or lose", ask=False)
    await client.wait_for("message", role="user")
    link = (await alice.http.post(f"/api/conversations/{room}/shares")).json()
    gone = await alice.http.delete(f"/api/conversations/{room}")
    assert gone.json() == {"name": room, "deleted": True, "restorable": True,
                           "purged_after_days": 30}
    assert (await client.wait_for("room", deleted=True))["deleted"] is True
    await client.send(type="message", text="still here?", ask=False)
    assert (await client.wait_for("error"))["code"] == "deleted"
    assert room not in [c["name"] for c in await alice.sidebar()]
    assert [c["name"] for c in await alice.sidebar(deleted="1")] == [room]
    assert (await alice.http.get(f"/s/{link['token']}")).status_code == 404
    with pytest.raises(ConnectionRefusedError):
        await alice.join(room)
    restored = await alice.http.post(f"/api/conversations/{room}/restore")
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert [c["name"] for c in await alice.sidebar()] == [room]
    assert (await alice.http.get(f"/s/{link['token']}")).status_code == 200

    await alice.http.delete(f"/api/conversations/{room}")
    row = await ChatRoom.get(name=room)
    assert await purge_deleted(30) == 0  # deleted just now: still restorable
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    assert await purge_deleted(30, at=later) == 1
    assert not await ChatRoom.filter(id=row.id).exists()
    assert not await ChatMessage.filter(room_id=row.id).exists()
    assert not await ChatShare.filter(room_id=row.id).exists()
    assert await alice.sidebar(deleted="1") == []
    await client.close()


async def test_leaving_a_public_room_takes_it_off_the_list_until_rejoined(
        people: list[Person]) -> None:
    alice, bob = people
    client = await bob.join("commons")
    await client.close()
    left = await bob.http.delete("/api/conversations/commons")
    assert left.json()["restorable"] is False
    assert await bob.sidebar() == []
    assert (await alice.http.get("/api/conversations/commons")).status_code == 200  # still there
    again = await bob.join("commons")
    assert [c["name"] for c in await bob.sidebar()] == ["commons"]
    await again.close()


async def test_exports_in_markdown_and_json(people: list[Person]) -> None:
    alice, _ = people
    room = await alice.room()
    await alice.http.patch(f"/api/conversations/{room}", json={
        "title": "Trip: Lisbon/Porto", "system_prompt": "Be brief."})
    client = await alice.join(room)
    done = await say(client, "Which city first?")
    await client.send(type="regenerate", reply_id=done["reply_id"], model=MODEL,
                      params={"seed": 7})  # simnode, as vLLM, answers another seed anew
    second = await client.wait_for("message", role="assistant", variant_of=done["reply_id"])
    second_done = await client.wait_for("done", reply_id=second["id"])

    markdown = await alice.http.get(f"/api/conversations/{room}/export")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.headers["content-disposition"] == \
        'attachment; filename="trip-lisbon-porto.md"'
    text = markdown.text
    assert text.startswith("# Trip: Lisbon/Porto\n") and "> Be brief." in text
    assert "Which city first?" in text and second_done["text"] in text
    assert done["text"] != second_done["text"]
    assert done["text"] not in text  # the alternative set aside is not in the reading
    assert f"${second_done['cost']}" in text

    exported = await alice.http.get(f"/api/conversations/{room}/export", params={
        "format": "json"})
    data = json.loads(exported.content)
    assert data["title"] == "Trip: Lisbon/Porto" and data["system_prompt"] == "Be brief."
    replies = [m for m in data["messages"] if m["role"] == "assistant"]
    assert [(m["id"], m["current"]) for m in replies] == [
        (done["reply_id"], False), (second["id"], True)]
    assert replies[1]["cost_micros"] == second_done["cost_micros"] > 0
    bad = await alice.http.get(f"/api/conversations/{room}/export", params={"format": "pdf"})
    assert bad.status_code == 400
    await client.close()


async def test_a_share_link_shows_its_snapshot_and_stops_when_revoked(
        people: list[Person]) -> None:
    alice, bob = people
    room = await alice.room()
    client = await alice.join(room)
    await client.send(type="message", text='before <script>window.pwned=1</script>', ask=False)
    await client.wait_for("message", role="user")
    made = await alice.http.post(f"/api/conversations/{room}/shares")
    assert made.status_code == 201
    share = made.json()
    assert share["url"].endswith(f"/s/{share['token']}") and len(share["token"]) >= 32
    await client.send(type="message", text="after the snapshot", ask=False)
    await client.wait_for("message", text="after the snapshot")

    async with httpx.AsyncClient(base_url=alice.portal.url) as anonymous:  # not signed in
        page = await anonymous.get(f"/s/{share['token']}")
        assert page.status_code == 200
        assert "before &lt;script&gt;window.pwned=1&lt;/script&gt;" in page.text
        assert "<script>window.pwned" not in page.text
        assert "after the snapshot" not in page.text
        assert page.headers["x-robots-tag"].startswith("noindex")
        assert page.headers["referrer-policy"] == "no-referrer"
        assert (await anonymous.get(f"/s/{share['token'][:-2]}xx")).status_code == 404
        assert (await anonymous.get("/s/<script>")).status_code == 404
        # Only its owner revokes it; then it is gone for everyone.
        assert (await bob.http.delete(f"/api/shares/{share['token']}")).status_code == 404
        listed = (await alice.http.get(f"/api/conversations/{room}/shares")).json()["data"]
        assert [s["token"] for s in listed] == [share["token"]] and listed[0]["messages"] == 1
        revoked = await alice.http.delete(f"/api/shares/{share['token']}")
        assert revoked.json() == {"token": share["token"], "revoked": True}
        assert (await anonymous.get(f"/s/{share['token']}")).status_code == 404
    assert (await alice.http.get(f"/api/conversations/{room}/shares")).json()["data"] == []
    await client.close()


def test_a_made_up_title_is_plain_words_before_any_code() -> None:
    from edge.chat.conversations import title_from

    assert title_from("Some **code**: ```python\ndef f(): return 1\n```") == "Some code:"
    assert title_from("# Heading\n\n> quoted `x` and $x^2$") == "Heading quoted x and x^2"
    assert title_from("```\nonly code\n```") == "only code"  # nothing before it: the words
    assert title_from("  many   spaces\n\tand lines ") == "many spaces and lines"
    assert title_from("word " * 30) == ("word " * 12).strip() + "…"
