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
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.store import keys as redis_keys
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

    __slots__ = ("close_code", "close_reason", "closed", "id", "key_id", "name", "prefix",
                 "queue", "room")

    def __init__(self, member_id: str, room: str, key_id: int, name: str,
                 prefix: str = "") -> None:
        self.id = member_id
        self.room = room
        self.key_id = key_id
        self.name = name
        self.prefix = prefix
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)
        self.closed = False
        self.close_reason = ""
        self.close_code: int | None = None

    def deliver(self, text: str) -> None:
        """Queue an event without waiting; a full queue closes the member."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("chat member %s is not reading; dropping it", self.id)
            self.close("too slow")

    def close(self, reason: str = "", code: int | None = None, *,
              last: str | None = None) -> None:
        """End the member's socket once what is queued is sent.

        Parameters:
          reason: the close frame's reason.
          code: the close code (default: 1008 with a reason, else 1000).
          last: an event sent instead of what is still queued (the socket's key
            was refused: nothing more of the room reaches it).
        """
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.close_code = code
        if last is not None:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(last)
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(None)


class RoomHub:
    """This worker's rooms: local members, their one shared subscription, presence.

    The worker holds one pub/sub connection for all its rooms, whatever the number
    of sockets: a room is subscribed when its first local member joins and
    unsubscribed when its last one leaves, one change at a time (concurrent joins
    of a new room share one ``SUBSCRIBE``; redis-py's pub/sub would open a
    connection per concurrent first command, and keep all but one for good).
    """

    def __init__(self, store: HotStore) -> None:
        self.store = store
        self.rooms: dict[str, dict[str, Member]] = {}
        #: Local members by their key's prefix, for closing a key's sockets at once.
        self.by_prefix: dict[str, dict[str, Member]] = {}
        self.control: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._pubsub = store.client.pubsub(ignore_subscribe_messages=True)
        self._subscribed: set[str] = set()
        self._subscribing = asyncio.Lock()
        self._changed = asyncio.Event()
        self._presence: dict[str, tuple[list[str], list[str]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        #: When each room's settings last changed (a ``room`` event passed), by this
        #: worker's clock: its sockets read the room again before the next message.
        self.room_changed: dict[str, float] = {}

    def channel(self, room: str) -> str:
        return redis_keys.chat_room(self.store.ns, room)

    def _who(self, room: str) -> str:
        return redis_keys.chat_room_members(self.store.ns, room)

    # -- membership ------------------------------------------------------------------
    async def join(self, member: Member) -> None:
        """Start delivering the room to ``member``, and announce it (soon, in a batch).

        Raises:
          RedisUnavailable: the member is not in the room (nothing to undo).
        """
        self.rooms.setdefault(member.room, {})[member.id] = member
        if member.prefix:
            self.by_prefix.setdefault(member.prefix, {})[member.id] = member
        try:
            await self._sync_subscription(member.room)
            await self.store.client.hset(self._who(member.room), member.id,
                                         json.dumps([member.name, time.time()]))
        except BaseException:
            self._forget(member)
            with contextlib.suppress(*RedisUnavailable):
                await self._sync_subscription(member.room)
            raise
        self._announce(member.room, member.name, joined=True)

    async def leave(self, member: Member) -> None:
        member.close()
        if not self._forget(member):
            return
        try:
            await self._sync_subscription(member.room)
        except RedisUnavailable:
            pass
        try:
            await self.store.client.hdel(self._who(member.room), member.id)
        except RedisUnavailable:
            return
        self._announce(member.room, member.name, joined=False)

    def _forget(self, member: Member) -> bool:
        """Drop ``member`` from the local maps; False if it was not there."""
        local = self.rooms.get(member.room, {})
        if local.pop(member.id, None) is None:
            return False
        if not local:
            del self.rooms[member.room]
            self.room_changed.pop(member.room, None)
        same_key = self.by_prefix.get(member.prefix)
        if same_key is not None:
            same_key.pop(member.id, None)
            if not same_key:
                del self.by_prefix[member.prefix]
        return True

    async def _sync_subscription(self, room: str) -> None:
        """Subscribe ``room`` if it has local members, unsubscribe it if not."""
        async with self._subscribing:
            wanted = room in self.rooms
            if wanted and room not in self._subscribed:
                await self._pubsub.subscribe(self.channel(room))
                self._subscribed.add(room)
                self._changed.set()
            elif not wanted and room in self._subscribed:
                self._subscribed.discard(room)
                await self._pubsub.unsubscribe(self.channel(room))

    def close_key(self, prefix: str, code: int, reason: str, last: str) -> int:
        """Close every local socket of the key ``prefix``: ``last``, then the close frame.

        Returns the number of sockets closed.
        """
        members = list(self.by_prefix.get(prefix, {}).values())
        for member in members:
            member.close(reason, code, last=last)
        return len(members)

    @property
    def sockets(self) -> int:
        """Sockets in this worker's rooms."""
        return sum(len(local) for local in self.rooms.values())

    async def members(self, room: str) -> tuple[list[str], int]:
        """Up to :data:`PRESENCE_NAMES` names of those in the room, and how many there are."""
        async with self.store.client.pipeline(transaction=False) as pipe:
            pipe.hlen(self._who(room))
            pipe.hscan(self._who(room), 0, count=PRESENCE_NAMES * 2)
            count, (_cursor, entries) = await pipe.execute()
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
        if text.startswith('{"type":"room"'):
            self.room_changed[room] = time.monotonic()
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
        async with self._subscribing:
            try:
                await self._pubsub.aclose()
            except Exception:  # already broken
                pass
            self._pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            self._subscribed.clear()
            try:
                if self.rooms:
                    rooms = list(self.rooms)
                    await self._pubsub.subscribe(*(self.channel(r) for r in rooms))
                    self._subscribed.update(rooms)
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
