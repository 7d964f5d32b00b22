"""Heartbeats: a dead process's reservations are settled within seconds, from their progress.

In-process tests of the owner rule on a real Redis (a namespace of their own), and
one through real processes: a worker SIGKILLed while its stream holds a key's
whole balance, the key able to reserve again within seconds, charged only what
the stream delivered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from edge.billing.heartbeat import heartbeat, new_owner
from edge.billing.reaper import Reaper
from edge.billing.reservations import Billing
from edge.identity.keys import KeyRecord
from edge.store.hotstore import HotStore
from simnode.tokenizer import chat_prompt_tokens
from tests.support.standard import expected_cost

PIN, POUT = 1_000_000, 2_000_000  # micro-dollars per 1M tokens: 1 and 2 µ$ a token


def key(key_id: int = 1) -> KeyRecord:
    return KeyRecord(id=key_id, prefix="sk-ip-test0000", key_hash="", name="t", rpm=10**6,
                     tpm=10**9, revoked=False, frozen=False, expires_at=None)


@pytest.fixture
def store(bare_store: HotStore) -> HotStore:
    """Never healed: each test marks the generation it needs."""
    return bare_store


async def stamp_generation(store: HotStore) -> None:
    """What a heal leaves behind: the money scripts run only under a generation."""
    run_id = (await store.client.info("server"))["run_id"]
    await store.client.set(f"{store.ns}:gen", f"test:0:{run_id}")


async def funded(store: HotStore, micros: int, owner: str) -> Billing:
    await stamp_generation(store)
    await store.client.set(store.balance(1), micros)
    # A deadline 10 minutes away: only the owner rule can settle these in a test.
    return Billing(store, reservation_ttl_ms=600_000, owner=owner)


async def reserve(billing: Billing, rid: str, *, ttl_ms: int | None = None) -> None:
    await billing.reserve(key(), rid, prompt_tokens=10, completion_tokens=1000,
                          input_price=PIN, output_price=POUT, meta={"model": "m"},
                          ttl_ms=ttl_ms)


async def open_ids(store: HotStore) -> set[str]:
    return {raw.decode() for raw in await store.client.zrange(store.open_reservations, 0, -1)}


async def test_a_reservation_names_its_owner_and_a_jobs_names_none(store: HotStore) -> None:
    billing = await funded(store, 100_000, "host:1:abcd")
    await reserve(billing, "r1")
    await reserve(billing, "job1", ttl_ms=3_600_000)  # a queued job's: held past this process
    assert await store.client.hget(store.reservation("r1"), "own") == b"host:1:abcd"
    assert await store.client.hget(store.reservation("job1"), "own") is None
    await reserve(Billing(store, reservation_ttl_ms=600_000), "r2")  # no owner given
    assert await store.client.hget(store.reservation("r2"), "own") is None


async def test_a_dead_owners_reservation_is_settled_from_its_progress(store: HotStore) -> None:
    billing = await funded(store, 10_000, "dead-owner")
    await reserve(billing, "r1")  # holds 10 + 2000 µ$
    await billing.progress("r1", 10, 7)
    reaper = Reaper(billing, grace_ms=60_000, owner_grace=0)
    # Seen gone once: not yet (a late beat is no death).
    assert await reaper.round() == 0
    assert await billing.balance(1) == 10_000 - 2010
    assert await reaper.round() == 1
    expected = 10 * 1 + 7 * 2
    assert await billing.balance(1) == 10_000 - expected
    (_id, fields), = await store.client.xrange(store.ledger_stream)
    assert fields[b"charged"] == str(expected).encode()
    assert (fields[b"cx"], fields[b"status"], fields[b"ct"]) == (b"1", b"499", b"7")
    assert await open_ids(store) == set()
    assert await reaper.round() == 0


async def test_a_beating_owner_and_ownerless_jobs_keep_their_reservations(
        store: HotStore) -> None:
    owner = new_owner()
    billing = await funded(store, 100_000, owner)
    stop = asyncio.Event()
    beating = asyncio.create_task(heartbeat(store, owner, stop, interval=0.05, ttl_ms=300))
    try:
        await reserve(billing, "live")
        await reserve(billing, "job", ttl_ms=3_600_000)
        reaper = Reaper(billing, grace_ms=60_000, owner_grace=0)
        for _ in range(4):
            assert await reaper.round() == 0
            await asyncio.sleep(0.1)
        assert await open_ids(store) == {"live", "job"}
    finally:
        stop.set()
        await beating
    # A clean stop deletes the key: what the process still holds is released at once.
    assert not await store.client.exists(store.heartbeat(owner))
    assert await reaper.round() == 0
    assert await reaper.round() == 1
    assert await open_ids(store) == {"job"}  # the job's only has its deadline


async def test_an_ownerless_reservation_keeps_the_deadline_rule(store: HotStore) -> None:
    billing = await funded(store, 100_000, "gone")
    await reserve(billing, "job", ttl_ms=1)  # a job's, and already past its deadline
    await billing.progress("job", 10, 3, ttl_ms=1)
    await asyncio.sleep(0.01)
    reaper = Reaper(billing, grace_ms=0, owner_grace=3600)
    assert await reaper.round() == 1  # at once: no heartbeat to wait for
    assert await billing.balance(1) == 100_000 - (10 * 1 + 3 * 2)


async def test_the_heartbeat_key_lives_only_as_long_as_its_ttl(store: HotStore) -> None:
    stop = asyncio.Event()
    beating = asyncio.create_task(heartbeat(store, "o", stop, interval=0.05, ttl_ms=500))
    await asyncio.sleep(0.2)
    assert 0 < await store.client.pttl(store.heartbeat("o")) <= 500
    beating.cancel()  # as _close_resources does, after setting stop
    with pytest.raises(asyncio.CancelledError):
        await beating
    assert not await store.client.exists(store.heartbeat("o"))


async def test_the_owner_grace_is_measured_from_the_first_round_that_missed_it(
        store: HotStore) -> None:
    billing = await funded(store, 100_000, "flaky")
    await reserve(billing, "r1")
    reaper = Reaper(billing, grace_ms=60_000, owner_grace=0.3)
    assert await reaper.round() == 0  # missing: noted
    assert await reaper.round() == 0  # missing, but not for 0.3 s yet
    await store.client.set(store.heartbeat("flaky"), "1", px=3000)
    await asyncio.sleep(0.35)
    assert await reaper.round() == 0  # it came back: forgiven
    await store.client.delete(store.heartbeat("flaky"))
    assert await reaper.round() == 0  # missing again: the grace starts over
    assert await reaper.round() == 0
    await asyncio.sleep(0.35)
    assert await reaper.round() == 1


async def test_a_round_is_bounded_and_later_rounds_finish_the_work(store: HotStore) -> None:
    billing = await funded(store, 1_000_000, "gone")
    for i in range(7):
        await reserve(billing, f"r{i}")
    reaper = Reaper(billing, grace_ms=60_000, owner_grace=0, limit=2, scan=3)
    counts = [await reaper.round() for _ in range(12)]
    assert max(counts) <= 2
    assert sum(counts) == 7
    assert await open_ids(store) == set()
    assert await billing.balance(1) == 1_000_000  # no progress: nothing charged


MESSAGES = [{"role": "user", "content": "Go on and on."}]


def test_a_killed_workers_reservation_is_released_within_seconds(portal_factory,
                                                                   simnode) -> None:
    node = simnode("--model", "m1", "--tokens-per-second", "10")
    # The default upstream timeout (600 s): without heartbeats the reservation would
    # be held for 11 minutes (deadline plus grace).
    portal = portal_factory(workers=2)
    portal.cli("migrate")
    portal.add_model("m1")  # 0.50 and 1.50 USD per 1M tokens
    portal.add_node("m1", node.url)
    portal.start()
    key_id, secret = portal.create_key("0.01")  # 10,000 µ$
    headers = {"authorization": f"Bearer {secret}"}
    # The worst case of this request (~7,600 µ$) takes most of the balance.
    body = {"model": "m1", "messages": MESSAGES, "max_tokens": 5000, "stream": True,
            "ignore_eos": True}

    def balance() -> int:
        response = httpx.get(portal.url + "/v1/key", headers=headers, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["data"]["balance_micros"]

    before = balance()
    received = 0
    refused = None
    killed_at = 0.0
    try:
        with httpx.stream("POST", portal.url + "/v1/chat/completions", json=body,
                          headers=headers, timeout=30) as response:
            assert response.status_code == 200, response.read()
            victim = int(response.headers["x-portal-worker"])
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    received += 1
                    if received == 5:
                        refused = httpx.post(portal.url + "/v1/chat/completions",
                                             json={**body, "stream": False},
                                             headers=headers, timeout=10).status_code
                    if received == 25:
                        os.kill(victim, signal.SIGKILL)
                        killed_at = time.monotonic()
    except httpx.TransportError:
        pass  # the connection died with the worker
    assert refused == 402  # the open stream holds the balance
    assert received >= 25 and killed_at

    # Held: ~7,600 µ$ less than before; released: less only what was delivered.
    while (released := balance()) < before - 1_000:
        assert time.monotonic() - killed_at < 10, "the reservation is still held"
        time.sleep(0.2)
    released_after = time.monotonic() - killed_at

    # It can reserve again: a new stream is admitted (and closed at once).
    with httpx.stream("POST", portal.url + "/v1/chat/completions", json=body,
                      headers=headers, timeout=30) as response:
        assert response.status_code == 200, (response.status_code, released_after)

    rows = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not rows:
        rows = _sql(portal, "SELECT prompt_tokens, completion_tokens, cost, status, cancelled "
                            "FROM usage_log WHERE key_id=? AND request_id=?", key_id, request_id)
        time.sleep(0.2)
    assert rows, "the reaped reservation never reached SQL"
    (prompt, completion, cost, status, cancelled), = rows
    assert (status, cancelled, prompt) == (499, 1, chat_prompt_tokens(MESSAGES))
    # Progress is recorded every second (10 tokens here): at most that much is not billed.
    assert received - 12 <= completion <= received
    assert cost == expected_cost(prompt, completion)
    assert released == before - cost  # the rest of the reservation came back


def _sql(portal, query: str, *params: object) -> list[tuple]:
    from tests.support.services import sql_query

    return sql_query(f"sqlite://{portal.root / 'data' / 'portal.sqlite3'}", query, *params)
