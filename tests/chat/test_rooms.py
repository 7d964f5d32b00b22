"""Chat rooms across two workers: same events in the same order, stop, resume, bad frames."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import websockets

from edge.billing.money import parse_usd, token_cost
from simnode.tokenizer import chat_prompt_tokens
from tests.chat.conftest import MODEL
from tests.support.chat import ChatClient, clients_on_both_workers
from tests.support.standard import Deployment

PRICE_IN, PRICE_OUT = parse_usd("0.50"), parse_usd("1.50")


def room_events(client: ChatClient) -> list[dict]:
    """What every member must see alike (not presence, not the sender's private events)."""
    shared = []
    for event in client.events:
        if event["type"] in ("message", "delta", "done", "status"):
            shared.append({k: v for k, v in event.items() if k not in ("balance", "_at")})
    return shared


async def test_members_on_both_workers_see_the_same_events_in_order(
        room_portal: Deployment) -> None:
    keys = [room_portal.key("1")[1] for _ in range(4)]
    clients = await clients_on_both_workers(room_portal.url, "together", keys)
    assert len({c.worker for c in clients}) == 2
    alice, bob = clients[0], clients[1]
    await alice.send(type="message", text="Hello everyone!", params={"max_tokens": 12})
    await bob.send(type="message", text="Hi, no model for me.", ask=False)
    await alice.send(type="message", text="And again, model?", params={"max_tokens": 6})
    for client in clients:
        await client.wait_for("done")
        await client.wait_for("done")
    await asyncio.sleep(0.3)
    reference = room_events(clients[0])
    assert sum(e["type"] == "delta" for e in reference) == 18
    for client in clients[1:]:
        assert room_events(client) == reference
    # The asker alone sees their new balance.
    done = [e for e in alice.events if e["type"] == "done"]
    assert all(isinstance(e["balance"], int) for e in done)
    assert all("balance" not in e for e in bob.events if e["type"] == "done")
    for client in clients:
        await client.close()


async def test_a_reply_keeps_the_conversation(room_portal: Deployment) -> None:
    _id, key = room_portal.key("1")
    client = await ChatClient.connect(room_portal.url, "memory", key)
    await client.send(type="message", text="My name is Ada.", params={"max_tokens": 4})
    first = await client.wait_for("done")
    await client.send(type="message", text="What is my name?", params={"max_tokens": 4})
    second = await client.wait_for("done")
    expected = chat_prompt_tokens([
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first["text"]},
        {"role": "user", "content": "What is my name?"}])
    assert second["usage"]["prompt_tokens"] == expected
    await client.close()


async def test_stop_cancels_and_charges_the_tokens_sent(room_portal: Deployment) -> None:
    key_id, key = room_portal.key("1")
    before = room_portal.balance(key)
    asker = await ChatClient.connect(room_portal.url, "stopping", key)
    watcher = await ChatClient.connect(room_portal.url, "stopping", room_portal.key("1")[1])
    await asker.send(type="message", text="Tell me a very long story.",
                     params={"max_tokens": 400})
    reply = await asker.wait_for("message", role="assistant")
    for _ in range(5):
        await asker.wait_for("delta", reply_id=reply["id"])
    await watcher.send(type="stop", reply_id=reply["id"])  # not theirs: ignored
    await asyncio.sleep(0.2)
    await asker.send(type="stop", reply_id=reply["id"])
    done = await asker.wait_for("done", reply_id=reply["id"])
    assert done["status"] == "stopped"
    deltas = [e for e in asker.events if e["type"] == "delta" and e["reply_id"] == reply["id"]]
    assert done["usage"]["completion_tokens"] == len(deltas) < 400
    cost = token_cost(done["usage"]["prompt_tokens"], len(deltas), PRICE_IN, PRICE_OUT)
    assert done["cost_micros"] == cost
    assert room_portal.balance(key) == before - cost == done["balance"]
    room_portal.wait_ledger(key_id, 1)
    room_portal.assert_books_balance(key_id)
    await asker.close()
    await watcher.close()


async def test_reconnecting_with_the_last_id_replays_what_was_missed(
        room_portal: Deployment) -> None:
    _a, alice_key = room_portal.key("1")
    _b, bob_key = room_portal.key("1")
    alice = await ChatClient.connect(room_portal.url, "replay", alice_key)
    bob = await ChatClient.connect(room_portal.url, "replay", bob_key)
    await alice.send(type="message", text="first", ask=False)
    seen = await bob.wait_for("message", text="first")
    await bob.close()
    await alice.send(type="message", text="second", ask=False)
    await alice.send(type="message", text="third", ask=False)
    await alice.wait_for("message", text="third")
    bob = await ChatClient.connect(room_portal.url, "replay", bob_key)
    await bob.send(type="resume", after=seen["id"])
    history = await bob.wait_for("history")
    assert [m["text"] for m in history["messages"]] == ["second", "third"]
    # and joining shows the recent history
    assert [m["text"] for m in bob.ready["messages"]][-3:] == ["first", "second", "third"]
    await bob.send(type="history", before=seen["id"] + 1, limit=1)
    older = await bob.wait_for("history")
    assert [m["text"] for m in older["messages"]] == ["first"]
    await alice.close()
    await bob.close()


@pytest.mark.parametrize(("frame", "code"), [
    ("not json at all", "not_json"),
    ("[1, 2, 3]", "bad_frame"),
    (json.dumps({"type": "dance"}), "unknown_type"),
    (json.dumps({"text": "no type"}), "unknown_type"),
    (json.dumps({"type": "message", "text": 42}), "bad_field"),
    (json.dumps({"type": "message", "text": "   "}), "bad_field"),
    (json.dumps({"type": "message", "text": "x" * 8001}), "too_large"),
    (json.dumps({"type": "message", "text": "hi", "params": {"temperature": "hot"}}),
     "bad_field"),
    (json.dumps({"type": "message", "text": "hi", "params": {"evil": 1}}), "bad_field"),
    (json.dumps({"type": "message", "text": "hi", "model": "nope"}), "model_not_found"),
    (json.dumps({"type": "stop", "reply_id": "x"}), "bad_field"),
    (json.dumps({"type": "resume", "after": -1}), "bad_field"),
    (json.dumps({"type": "auth", "key": "again"}), "bad_frame"),
    ('{"type": "message", "text": "\\ud800", "ask": false}', "not_json"),  # lone surrogate
    ('{"type": "message", "text": "hi", "system": "\\udfff"}', "not_json"),
])
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(
        room_portal: Deployment, frame: str, code: str) -> None:
    client = await ChatClient.connect(room_portal.url, "rough", room_portal.key("1")[1])
    await client.socket.send(frame)
    error = await client.wait_for("error")
    assert error["code"] == code
    await client.send(type="ping")
    await client.wait_for("pong")
    await client.close()


async def test_oversize_frames_close_the_socket_cleanly(room_portal: Deployment) -> None:
    client = await ChatClient.connect(room_portal.url, "rough", room_portal.key("1")[1])
    await client.socket.send("x" * (100 * 1024))
    await asyncio.wait_for(client._reader, 10)
    assert client.socket.close_code == 1009  # message too big
    # the worker is fine
    again = await ChatClient.connect(room_portal.url, "rough", room_portal.key("1")[1])
    await again.close()


async def test_frame_rate_is_limited(room_portal: Deployment) -> None:
    client = await ChatClient.connect(room_portal.url, "busy", room_portal.key("1")[1])
    for _ in range(30):
        await client.send(type="ping")
    error = await client.wait_for("error", code="rate_limited")
    assert "per second" in error["message"]
    await client.close()


async def test_authentication_and_origin(room_portal: Deployment) -> None:
    with pytest.raises(ConnectionRefusedError):
        await ChatClient.connect(room_portal.url, "locked", "sk-ip-nope0000_" + "x" * 43)
    with pytest.raises(ConnectionRefusedError):
        await ChatClient.connect(room_portal.url, "locked", room_portal.key("1")[1],
                                 headers={"Origin": "https://evil.example"})
    url = room_portal.url.replace("http://", "ws://") + "/ws/chat/locked"
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "message", "text": "hi"}))
        assert json.loads(await socket.recv())["type"] == "error"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd.code == 4001
    same_origin = await ChatClient.connect(room_portal.url, "locked", room_portal.key("1")[1],
                                           headers={"Origin": room_portal.url})
    await same_origin.close()


async def test_rooms_per_key_are_limited_across_workers(room_portal: Deployment) -> None:
    _id, key = room_portal.key("1")
    open_ = [await ChatClient.connect(room_portal.url, f"quota{i}", key) for i in range(3)]
    with pytest.raises(ConnectionRefusedError, match="rooms at once"):
        await ChatClient.connect(room_portal.url, "quota9", key)
    await open_[0].close()
    await asyncio.sleep(0.2)
    again = await ChatClient.connect(room_portal.url, "quota9", key)
    for client in [*open_[1:], again]:
        await client.close()


async def test_private_rooms_and_room_list(room_portal: Deployment) -> None:
    _id, key = room_portal.key("1")
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=room_portal.url, headers=headers) as http:
        made = (await http.post("/api/rooms", json={"private": True})).json()
        assert made["private"] and made["name"].startswith("p-") and len(made["name"]) > 12
        public = (await http.post("/api/rooms", json={"name": "open-house",
                                                       "model": MODEL})).json()
        assert public == {"name": "open-house", "private": False, "model": MODEL,
                          "title": "open-house", "created": True}
        bad = await http.post("/api/rooms", json={"name": "no spaces allowed"})
        assert bad.status_code == 400
        names = [r["name"] for r in (await http.get("/api/rooms")).json()["data"]]
        assert made["name"] in names and "open-house" in names
    other = room_portal.key("1")[1]
    async with httpx.AsyncClient(base_url=room_portal.url,
                                 headers={"authorization": f"Bearer {other}"}) as http:
        names = [r["name"] for r in (await http.get("/api/rooms")).json()["data"]]
        assert made["name"] not in names  # private rooms are listed to their maker only


async def test_a_model_no_node_can_serve_says_so_at_once(room_portal: Deployment) -> None:
    """No node, or only static ones an operator stopped: nothing will boot, so no
    "warming up" (tests/lifecycle/test_chat_warming.py has a model that boots)."""
    room_portal.portal.add_model("sleepy")
    await asyncio.sleep(0.5)
    client = await ChatClient.connect(room_portal.url, "cold", room_portal.key("1")[1])
    await client.send(type="message", text="anyone there?", model="sleepy")
    done = await client.wait_for("done", timeout=5)
    assert done["status"] == "failed" and done["cost_micros"] == 0
    assert "none can be started on demand" in done["error"]
    assert not [e for e in client.events if e["type"] == "status"]
    await client.close()


async def test_a_key_revoked_while_its_socket_is_open_can_no_longer_ask(
        room_portal: Deployment) -> None:
    """The socket is closed by the revocation itself (tests/chat/test_key_guard.py has
    more); nothing is said or charged for it."""
    key_id, key = room_portal.key("1")
    client = await ChatClient.connect(room_portal.url, "revoked", key)
    before = room_portal.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", key_id)
    room_portal.portal.cli("keys", "revoke", str(key_id))
    error = await client.wait_for("error", timeout=5)
    assert error["code"] == "invalid_api_key"
    await asyncio.wait_for(client._reader, 5)
    assert client.socket.close_code == 4001
    assert room_portal.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", key_id) == before
    assert not [e for e in client.events if e["type"] == "delta"]


async def test_huge_ids_are_refused_not_fatal(room_portal: Deployment) -> None:
    client = await ChatClient.connect(room_portal.url, "rough", room_portal.key("1")[1])
    await client.send(type="history", before=2**63)
    assert (await client.wait_for("error"))["code"] == "bad_field"
    await client.send(type="ping")
    await client.wait_for("pong")
    await client.close()


def test_the_scheduled_purge_removes_only_conversations_deleted_long_ago(
        room_portal: Deployment) -> None:
    """``portal scheduler`` enqueues the purge, ``portal worker`` removes rooms deleted
    longer ago than ``PORTAL_CHAT_PURGE_DAYS`` and leaves the recently deleted."""
    _id, key = room_portal.key("1")
    headers = {"authorization": f"Bearer {key}"}
    names = []
    for _ in range(2):
        made = httpx.post(room_portal.url + "/api/rooms", json={"private": True}, headers=headers)
        names.append(made.json()["name"])
        gone = httpx.delete(room_portal.url + f"/api/conversations/{names[-1]}", headers=headers)
        assert gone.json()["restorable"] is True
    old, recent = names
    long_ago = str(datetime.now(UTC) - timedelta(days=31))
    room_portal.sql("UPDATE chat_rooms SET deleted_at = ? WHERE name = ?", long_ago, old)

    portal = room_portal.portal
    portal.start_worker("purge-worker")
    portal.spawn("purge-scheduler", "scheduler")  # it sends every periodic actor at start
    try:
        deadline = time.monotonic() + 60
        while room_portal.sql("SELECT 1 FROM chat_rooms WHERE name = ?", old):
            assert time.monotonic() < deadline, portal.log("purge-worker")[-2000:]
            time.sleep(0.2)
    finally:
        portal.stop_child("purge-scheduler")
        portal.stop_child("purge-worker")
    assert room_portal.sql("SELECT 1 FROM chat_rooms WHERE name = ?", recent) == [(1,)]
    bin_ = httpx.get(room_portal.url + "/api/conversations?deleted=1", headers=headers).json()
    assert [c["name"] for c in bin_["data"]] == [recent]
