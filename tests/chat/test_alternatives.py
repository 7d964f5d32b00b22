"""Regenerate the last reply and edit the last question: alternatives kept, each billed.

In-process, over the chat socket; the node double records what context each reply got.
"""

from __future__ import annotations

from typing import Any

from tests.support.chat import CHAT_MODEL as MODEL
from tests.support.chat import ChatClient, Person, say
from tests.support.inprocess import InProcessPortal, NodeDouble, Pace


def _contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"]]


async def _regenerate(client: ChatClient, reply_id: int, seed: int, *,
                      first: int | None = None) -> dict[str, Any]:
    """Regenerate the reply shown (``reply_id``; ``first``: the first of its set)."""
    await client.send(type="regenerate", reply_id=reply_id, params={"seed": seed})
    hidden = await client.wait_for("chosen")
    assert hidden == {**hidden, "show": [], "hide": [reply_id]}
    new = await client.wait_for("message", role="assistant", variant_of=first or reply_id)
    return await client.wait_for("done", reply_id=new["id"])


async def test_regenerate_keeps_the_old_reply_flips_between_them_and_bills_each(
        people: list[Person], chat_node: NodeDouble, inprocess_portal: InProcessPortal) -> None:
    alice, _ = people
    room = await alice.room()
    client = await alice.join(room)
    first = await say(client, "Name a colour.")
    second = await _regenerate(client, first["reply_id"], seed=1)
    third = await _regenerate(client, second["reply_id"], seed=2, first=first["reply_id"])
    assert len({first["text"], second["text"], third["text"]}) == 3
    # Each generation asked the model the same question, without the replies set aside.
    for call in chat_node.calls[-3:]:
        assert _contents(call.body) == ["Name a colour."]
    # Each was charged like any reply, and the books agree.
    await inprocess_portal.wait_settled()
    rows = [r for r in await inprocess_portal.usage(alice.key_id) if r["endpoint"] == "chat-room"]
    assert len(rows) == 3 and all(r["cost"] > 0 for r in rows)
    assert sorted(r["cost"] for r in rows) == sorted(
        d["cost_micros"] for d in (first, second, third))
    await inprocess_portal.assert_books_balance(alice.key_id)

    # Flip back to the first: every member sees it, and the next question builds on it.
    await client.send(type="choose", message_id=first["reply_id"])
    flip = await client.wait_for("chosen")
    assert flip["show"] == [first["reply_id"]] and flip["hide"] == [third["reply_id"]]
    again = await ChatClient.connect(alice.portal.url, room, alice.secret)
    shown = {m["id"]: m["current"] for m in again.ready["messages"] if m["role"] == "assistant"}
    assert shown == {first["reply_id"]: True, second["reply_id"]: False,
                     third["reply_id"]: False}
    await say(client, "Why that one?")
    assert _contents(chat_node.calls[-1].body) == ["Name a colour.", first["text"], "Why that one?"]

    # Only the last reply can be regenerated or flipped, now that another question came.
    await client.send(type="regenerate", reply_id=first["reply_id"])
    assert (await client.wait_for("error"))["code"] == "not_last"
    await client.send(type="choose", message_id=second["reply_id"])
    assert (await client.wait_for("error"))["code"] == "not_last"
    await client.send(type="regenerate", reply_id=10**12)
    assert (await client.wait_for("error"))["code"] == "not_found"
    await again.close()
    await client.close()


async def test_a_reply_still_streaming_cannot_be_regenerated(
        people: list[Person], chat_node: NodeDouble) -> None:
    alice, _ = people
    room = await alice.room()
    client = await alice.join(room)
    chat_node.script(Pace(0.3))
    await client.send(type="message", text="Take your time.", model=MODEL)
    reply = await client.wait_for("message", role="assistant")
    await client.send(type="regenerate", reply_id=reply["id"])
    assert (await client.wait_for("error"))["code"] == "busy"
    await client.wait_for("done", reply_id=reply["id"], timeout=20)
    await client.close()


async def test_edit_the_last_question_and_flip_back_to_the_first_version(
        people: list[Person], chat_node: NodeDouble, inprocess_portal: InProcessPortal) -> None:
    alice, _ = people
    room = await alice.room()
    client = await alice.join(room)
    done = await say(client, "What is the capitol of France?")
    question = done["reply_id"] - 1  # the reply follows its question
    await client.send(type="edit", message_id=question, text="What is the capital of France?",
                      model=MODEL)
    flip = await client.wait_for("chosen")
    assert flip["hide"] == [question, done["reply_id"]] and flip["show"] == []
    assert (await client.wait_for("sent"))["id"] > question
    version = await client.wait_for("message", role="user", variant_of=question)
    assert version["text"] == "What is the capital of France?" and version["current"]
    answer = await client.wait_for("message", role="assistant", reply_to=version["id"])
    answered = await client.wait_for("done", reply_id=answer["id"])
    assert _contents(chat_node.calls[-1].body) == ["What is the capital of France?"]
    await inprocess_portal.wait_settled()
    assert len([r for r in await inprocess_portal.usage(alice.key_id)
                if r["endpoint"] == "chat-room"]) == 2

    # The first version comes back with its reply; the edited one and its reply step aside.
    await client.send(type="choose", message_id=question)
    flip = await client.wait_for("chosen")
    assert sorted(flip["show"]) == [question, done["reply_id"]]
    assert sorted(flip["hide"]) == [version["id"], answered["reply_id"]]
    await say(client, "And of Spain?")
    assert _contents(chat_node.calls[-1].body) == ["What is the capitol of France?", done["text"],
                                              "And of Spain?"]
    # An edit of a message no longer the last is refused; so is an empty one.
    await client.send(type="edit", message_id=question, text="again")
    assert (await client.wait_for("error"))["code"] == "not_last"
    await client.send(type="edit", message_id=question, text="   ")
    assert (await client.wait_for("error"))["code"] == "bad_field"
    await client.close()


async def test_only_its_author_edits_a_message(people: list[Person]) -> None:
    alice, bob = people
    ours = await alice.join("shared-room")
    theirs = await bob.join("shared-room")
    await ours.send(type="message", text="alice speaks", ask=False)
    said = await ours.wait_for("sent")
    await theirs.wait_for("message", id=said["id"])
    await theirs.send(type="edit", message_id=said["id"], text="bob rewrites alice")
    assert (await theirs.wait_for("error"))["code"] == "forbidden"
    assert theirs.ready["own"] == [] and said["id"] not in [
        m for e in theirs.log("history") for m in e["own"]]
    again = await ChatClient.connect(alice.portal.url, "shared-room", alice.secret)
    assert again.ready["own"] == [said["id"]]  # the page knows which messages it may edit
    for client in (ours, theirs, again):
        await client.close()


async def test_edit_and_regenerate_frames_are_checked(people: list[Person]) -> None:
    alice, _ = people
    client = await alice.join(await alice.room())
    for frame, code in (({"type": "edit", "text": "x"}, "bad_field"),
                        ({"type": "edit", "message_id": "1", "text": "x"}, "bad_field"),
                        ({"type": "regenerate"}, "bad_field"),
                        ({"type": "regenerate", "reply_id": -1}, "bad_field"),
                        ({"type": "choose", "message_id": True}, "bad_field"),
                        ({"type": "regenerate", "reply_id": 1, "params": {"top_k": 3}},
                         "bad_field"),
                        ({"type": "message", "text": "a\x00b"}, "bad_field"),
                        ({"type": "edit", "message_id": 1, "text": "\x00"}, "bad_field"),
                        ({"type": "choose", "message_id": 5}, "not_found")):
        await client.send(**frame)
        assert (await client.wait_for("error"))["code"] == code, frame
    await client.close()
