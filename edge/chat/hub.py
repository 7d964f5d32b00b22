"""Room fan-out for one worker: Redis pub/sub in, the worker's sockets out.

Every event of a room is published once on ``$ns:room:<name>``; each worker with
a member in that room is subscribed and hands the event to its members' send
queues. One publisher per reply, and pub/sub's per-channel order, mean every
member sees the same events in the same order, whichever worker holds its
socket. A member whose queue fills (a client that stopped reading) is dropped
rather than allowed to hold back the room.

Events whose ``type`` starts with ``_`` are for the workers (a stop request, say)
and never reach clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.store.hotstore import RedisUnavailable

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["Member", "RoomHub"]

log = logging.getLogger(__name__)

#: Events queued for one socket before it counts as too slow and is dropped.
QUEUE_LIMIT = 2_000
#: Seconds between two presence heartbeats; entries older than three are gone.
PRESENCE_BEAT = 20.0
#: Seconds over which joins and leaves of a room are gathered into one event: a
#: room of thousands must not send every member an event per arrival.
PRESENCE_WINDOW = 0.25
#: Names listed in a presence event at most (the count is always exact).
PRESENCE_NAMES = 100


class Member:
    """One socket in one room, as the hub sees it."""

    __slots__ = ("close_reason", "closed", "id", "key_id", "name", "queue", "room")

    def __init__(self, member_id: str, room: str, key_id: int, name: str) -> None:
        self.id = member_id
        self.room = room
        self.key_id = key_id
        self.name = name
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)
        self.closed = False
        self.close_reason = ""

    def deliver(self, text: str) -> None:
        """Queue an event without waiting; a full queue closes the member."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("chat member %s is not reading; dropping it", self.id)
            self.close("too slow")

    def close(self, reason: str = "") -> None:
        """End the member's socket (policy close, 1008, when ``reason`` is given)."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            try:
                self.queue.put_nowait(None)
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.queue.put_nowait(None)


class RoomHub:
    """This worker's rooms: local members, their subscriptions, presence."""

    def __init__(self, store: HotStore) -> None:
        self.store = store
        self.rooms: dict[str, dict[str, Member]] = {}
        self.control: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._pubsub = store.client.pubsub(ignore_subscribe_messages=True)
        self._changed = asyncio.Event()
        self._presence: dict[str, tuple[list[str], list[str]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    def channel(self, room: str) -> str:
        return f"{self.store.ns}:room:{room}"

    def _who(self, room: str) -> str:
        return f"{self.store.ns}:room:{room}:who"

    # -- membership ------------------------------------------------------------------
    async def join(self, member: Member) -> None:
        """Start delivering the room to ``member``, and announce it (soon, in a batch)."""
        local = self.rooms.setdefault(member.room, {})
        if not local:
            await self._pubsub.subscribe(self.channel(member.room))
            self._changed.set()
        local[member.id] = member
        await self.store.client.hset(self._who(member.room), member.id,
                                     json.dumps([member.name, time.time()]))
        self._announce(member.room, member.name, joined=True)

    async def leave(self, member: Member) -> None:
        member.close()
        local = self.rooms.get(member.room, {})
        if local.pop(member.id, None) is None:
            return
        if not local:
            del self.rooms[member.room]
            try:
                await self._pubsub.unsubscribe(self.channel(member.room))
            except RedisUnavailable:
                pass
        try:
            await self.store.client.hdel(self._who(member.room), member.id)
        except RedisUnavailable:
            return
        self._announce(member.room, member.name, joined=False)

    async def members(self, room: str) -> tuple[list[str], int]:
        """Up to :data:`PRESENCE_NAMES` names of those in the room, and how many there are."""
        client = self.store.client
        count = await client.hlen(self._who(room))
        _cursor, entries = await client.hscan(self._who(room), 0, count=PRESENCE_NAMES * 2)
        cutoff = time.time() - 3 * PRESENCE_BEAT
        names = sorted({name for name, seen in map(json.loads, entries.values())
                        if seen >= cutoff})
        return names[:PRESENCE_NAMES], count

    def _announce(self, room: str, name: str, *, joined: bool) -> None:
        pending = self._presence.get(room)
        if pending is None:
            pending = self._presence[room] = ([], [])
            task = asyncio.create_task(self._flush_presence(room))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        pending[0 if joined else 1].append(name)

    async def _flush_presence(self, room: str) -> None:
        await asyncio.sleep(PRESENCE_WINDOW)
        joined, left = self._presence.pop(room, ([], []))
        try:
            await self.publish_presence(room, joined, left)
        except RedisUnavailable:
            pass

    async def publish_presence(self, room: str, joined: list[str], left: list[str]) -> None:
        from edge.chat.protocol import event

        names, count = await self.members(room)
        await self.publish(room, event("presence", joined=joined[:PRESENCE_NAMES],
                                       left=left[:PRESENCE_NAMES], members=names, count=count))

    async def publish(self, room: str, text: str) -> None:
        await self.store.client.publish(self.channel(room), text)

    # -- delivery ----------------------------------------------------------------------
    def dispatch(self, room: str, text: str) -> None:
        local = self.rooms.get(room)
        if text.startswith('{"type":"_'):
            message = json.loads(text)
            handler = self.control.get(message["type"])
            if handler is not None:
                handler(room, message)
            return
        if not local:
            return
        if text.startswith('{"type":"done"'):
            self._deliver_done(local, text)
            return
        for member in list(local.values()):
            member.deliver(text)

    def _deliver_done(self, local: dict[str, Member], text: str) -> None:
        """The asker sees their new balance; the rest of the room does not."""
        message = json.loads(text)
        payer = message.pop("payer", None)
        balance = message.pop("balance", None)
        public = json.dumps(message, separators=(",", ":"))
        private = json.dumps({**message, "balance": balance}, separators=(",", ":"))
        for member in list(local.values()):
            member.deliver(private if member.key_id == payer else public)

    async def run(self, stop: asyncio.Event) -> None:
        """Read the subscribed channels until ``stop``; resubscribe after Redis returns."""
        prefix = len(self.channel(""))
        beat = time.monotonic()
        while not stop.is_set():
            try:
                if not self.rooms:
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), 1.0)
                    except TimeoutError:
                        pass
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    self.dispatch(message["channel"].decode()[prefix:],
                                  message["data"].decode())
                if time.monotonic() - beat > PRESENCE_BEAT:
                    beat = time.monotonic()
                    await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except RedisUnavailable as exc:
                log.warning("chat hub: Redis unavailable (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
                await self._resubscribe()
            except Exception:
                log.exception("chat hub: could not deliver an event")

    async def _resubscribe(self) -> None:
        try:
            await self._pubsub.aclose()
        except Exception:  # already broken
            pass
        self._pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
        try:
            if self.rooms:
                await self._pubsub.subscribe(*(self.channel(r) for r in self.rooms))
        except RedisUnavailable:
            pass

    async def _heartbeat(self) -> None:
        now = time.time()
        async with self.store.client.pipeline(transaction=False) as pipe:
            for room, local in self.rooms.items():
                for member in local.values():
                    pipe.hset(self._who(room), member.id, json.dumps([member.name, now]))
                pipe.expire(self._who(room), int(4 * PRESENCE_BEAT))
            await pipe.execute()

    async def close(self) -> None:
        for local in list(self.rooms.values()):
            for member in list(local.values()):
                await self.leave(member)
        await self._pubsub.aclose()
