"""``/ws/chat/{room}`` and the small room API beside it.

A socket is authenticated by the browser's session cookie, or by a first
``auth`` frame for programs; browsers must come from the portal's own origin.
Then it joins the room (through this worker's hub), gets ``ready`` with the
recent history and who is there, and trades frames until it leaves. A bad
frame gets an ``error`` event and the socket stays open; nothing a client sends
ends the handler with an exception.

Bounds: a worker keeps at most ``PORTAL_CHAT_SOCKETS_PER_WORKER`` sockets, a key
has at most ``PORTAL_CHAT_SOCKETS_PER_KEY`` across workers (and is in at most
``PORTAL_CHAT_ROOMS_PER_KEY`` rooms), and at most
:data:`~edge.chat.limits.SocketGate.SETUP_SLOTS` sockets of a worker talk to Redis
while they open or close; a socket refused gets an ``error`` event and a close
code (:mod:`edge.chat.protocol`). A Redis failure while a socket opens closes it
with 1013 (try again later), never with an unhandled exception. While it is open,
the key's :class:`~edge.chat.guard.KeyGuard` closes it when the key is revoked,
frozen or expires.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed as _WebsocketsClosed

from edge.chat import turns
from edge.chat.conversations import chat_model, join, open_room, room_event, touch
from edge.chat.guard import KeyGuard
from edge.chat.hub import Member
from edge.chat.limits import Crowded, MessageRate, SetupBusy
from edge.chat.protocol import (
    CLOSE_BAD_KEY,
    CLOSE_BUSY,
    CLOSE_FROZEN,
    CLOSE_NO_ROOM,
    CLOSE_POLICY,
    CLOSE_TOO_MANY_ROOMS,
    CLOSE_TOO_MANY_SOCKETS,
    ROOM_NAME,
    ClientFrame,
    FrameError,
    event,
    parse_frame,
    refusal_close,
)
from edge.chat.replies import message_view
from edge.db.models import ApiKey, ChatMessage, ChatRoom
from edge.errors import APIError
from edge.identity.auth import check_key
from edge.identity.keys import KeyRefusal
from edge.identity.sessions import COOKIE, session_key
from edge.store.hotstore import RedisUnavailable

if TYPE_CHECKING:
    from edge.chat import ChatService
    from edge.context import PortalContext
    from edge.fleet.registry import ModelInfo
    from edge.identity.keys import KeyRecord

__all__ = ["bp"]

log = logging.getLogger(__name__)

#: A peer gone, as the websockets library or Sanic says it.
ConnectionClosed = (_WebsocketsClosed, WebsocketClosed)

#: Seconds a closing socket's writer gets to send what is queued.
WRITER_DRAIN = 2.0

bp = Blueprint("chat")

#: Seconds a program has to send its ``auth`` frame.
AUTH_TIMEOUT = 10.0
#: Frames that say something in the room (and so need its settings).
SPEAKING = ("message", "edit", "regenerate")
#: Messages shown when joining.
RECENT = 50

try:
    from sanic.server.websockets.impl import WebsocketImplProtocol as Socket
except ImportError:  # pragma: no cover
    Socket = Any  # type: ignore[misc,assignment]


def origin_allowed(request: Request, settings) -> bool:
    """Browsers (they send Origin) must come from the portal's own pages."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    host = urlparse(origin).netloc
    allowed = {request.headers.get("host", ""), urlparse(settings.effective_public_url).netloc}
    allowed |= {o.strip() for o in settings.allowed_origins.split(",") if o.strip()}
    return host in allowed or origin in allowed


@bp.after_server_start
async def start_key_guard(app: Any, _loop: Any = None) -> None:
    """Start this worker's :class:`~edge.chat.guard.KeyGuard` (after the portal's resources)."""
    portal = getattr(app.ctx, "portal", None)
    chat: ChatService | None = getattr(app.ctx, "chat", None)
    if portal is None or chat is None:
        return
    guard = KeyGuard(portal.keys, chat.hub, chat.quota)
    chat.guard = guard
    portal.events.on("key", guard.on_event)  # key:<prefix> and keys
    portal.tasks.append(asyncio.create_task(guard.run(portal.stop), name="chat-key-guard"))


@bp.websocket("/ws/chat/<room:str>")
async def chat_socket(request: Request, ws: Socket, room: str) -> None:
    portal: PortalContext = request.app.ctx.portal
    chat: ChatService = request.app.ctx.chat
    if not ROOM_NAME.match(room):
        await _refuse(ws, CLOSE_NO_ROOM, "Room names are 1-64 letters, digits, - and _.")
        return
    if not origin_allowed(request, portal.settings):
        await _refuse(ws, CLOSE_FROZEN, "This origin may not open chat sockets.")
        return
    if not chat.gate.enter(portal.settings.chat_sockets_per_worker):
        await _refuse(ws, CLOSE_BUSY, "This server has too many chat sockets open; "
                                      "try again later.")
        return
    try:
        await _serve(portal, chat, request, ws, room)
    except ConnectionClosed:
        pass
    except SetupBusy:
        await _refuse(ws, CLOSE_BUSY, "The server is busy opening other sockets; "
                                      "try again later.")
    except (*RedisUnavailable, RedisError) as exc:
        log.warning("chat socket in %s refused: Redis did not answer (%r)", room, exc)
        await _refuse(ws, CLOSE_BUSY, "The server could not open the socket; "
                                      "try again later.")
    finally:
        chat.gate.leave()


async def _serve(portal: PortalContext, chat: ChatService, request: Request, ws: Socket,
                 room: str) -> None:
    """Authenticate, admit, join, then trade frames until the socket ends."""
    async with chat.gate.slot():
        key = await session_key(portal, request.cookies.get(COOKIE))
    if key is None:
        key = await _authenticate(portal, chat, ws)
        if key is None:
            return
    refusal = key.refusal(time.time())
    if refusal is not None:
        await _refuse(ws, refusal_close(refusal)[0], refusal.message)
        return
    forbidden = key.forbids(route="chat")
    if forbidden is not None:
        await _refuse(ws, CLOSE_FROZEN, forbidden)  # 4003: forbidden, as a frozen key is
        return
    member = Member(secrets.token_hex(8), room, key.id, key.name, key.prefix)
    entered = False
    writer: asyncio.Task[None] | None = None
    try:
        async with chat.gate.slot():
            crowded = await chat.quota.enter(key.id, room,
                                             sockets=portal.settings.chat_sockets_per_key)
            if crowded is Crowded.ROOMS:
                await _refuse(ws, CLOSE_TOO_MANY_ROOMS,
                              f"A key may be in {chat.quota.limit} rooms at once.")
                return
            if crowded is Crowded.SOCKETS:
                await _refuse(ws, CLOSE_TOO_MANY_SOCKETS,
                              f"A key may have {portal.settings.chat_sockets_per_key} chat "
                              "sockets open at once.")
                return
            entered = True
            row = await open_room(key.account_id, key.id, room)
            if row is None:  # another account's private room, or a deleted one
                await _refuse(ws, CLOSE_NO_ROOM, "No such room.")
                return
            await join(key.account_id, row)
            # Join first, so nothing published from now on is missed; the history read
            # after may repeat an event, which clients drop by id. ``ready`` goes out
            # before anything queued meanwhile.
            await chat.hub.join(member)
            recent = list(reversed(await ChatMessage.filter(room_id=row.id).order_by("-id")
                                   .limit(RECENT)))
            names, count = await chat.hub.members(room)
            own = await _own(key, recent)
        ready = event("ready", own=own, room=room, you=key.name, worker=portal.worker_id,
                      private=row.private, model=row.model or None, title=row.title or room,
                      system=row.system_prompt, params=row.params or {},
                      mine=row.account_id == key.account_id, members=names,
                      count=count, messages=[message_view(m) for m in recent])
        writer = asyncio.create_task(_write(ws, member, first=ready))
        if chat.guard is not None:
            await chat.guard.check(key.prefix)  # a change that came while it joined
        await _read(portal, chat, ws, member, key, row)
    finally:
        if entered:
            # Shielded: a second cancellation (the connection lost while leaving) must not
            # skip the quota, or the key would hold a room it is not in.
            await asyncio.shield(_leave(chat, member, key.id))
        if writer is not None:
            member.close()  # the writer sends what is queued (an error, say), then closes
            await asyncio.wait({writer}, timeout=WRITER_DRAIN)
            writer.cancel()


async def _leave(chat: ChatService, member: Member, key_id: int) -> None:
    try:
        async with chat.gate.slot(wait=None):
            try:
                await chat.hub.leave(member)
            finally:
                await chat.quota.leave(key_id, member.room)
    except (*RedisUnavailable, RedisError) as exc:
        # The quota's hash expires (RoomQuota.TTL) once no worker refreshes it.
        log.warning("chat: leaving %s while Redis did not answer (%r)", member.room, exc)


async def _refuse(ws: Socket, code: int, reason: str) -> None:
    try:
        await ws.send(event("error", code="refused", message=reason))
        await ws.close(code, reason)
    except ConnectionClosed:
        pass


async def _authenticate(portal: PortalContext, chat: ChatService,
                        ws: Socket) -> KeyRecord | None:
    """Wait for an ``auth`` frame; anything else ends the socket.

    The key's secret is checked here; whether the key is usable, by the caller.
    """
    raw = await ws.recv(timeout=AUTH_TIMEOUT)
    if raw is None:
        await _refuse(ws, CLOSE_BAD_KEY, "Send {\"type\": \"auth\", \"key\": …} first.")
        return None
    try:
        frame = parse_frame(raw)
        if frame.type != "auth":
            raise FrameError("unauthenticated", "Send an auth frame first.")
        async with chat.gate.slot():
            return await check_key(portal, frame.key, reading=True)
    except (FrameError, APIError) as exc:
        await _refuse(ws, CLOSE_BAD_KEY, getattr(exc, "message", str(exc)))
        return None


async def _write(ws: Socket, member: Member, *, first: str) -> None:
    """Send ``first``, then queued events in order; the end of the queue (None) closes."""
    try:
        await ws.send(first)
        while True:
            text = await member.queue.get()
            if text is None:
                reason = member.close_reason
                code = member.close_code or (CLOSE_POLICY if reason else 1000)
                await ws.close(code, reason)
                return
            await ws.send(text)
    except ConnectionClosed:
        member.close()
    except Exception:
        log.exception("chat writer failed")
        member.close()


async def _read(portal: PortalContext, chat: ChatService, ws: Socket, member: Member,
                key: KeyRecord, room: ChatRoom) -> None:
    rate = MessageRate()
    read_at = time.monotonic()  # the room was read as the socket joined
    while not member.closed:
        raw = await ws.recv()
        if raw is None or member.closed:
            continue
        if not rate.allow():
            member.deliver(event("error", code="rate_limited",
                                 message="Too many frames; at most 5 per second."))
            continue
        try:
            # The key may have been revoked or frozen since the socket opened: ask the
            # rule again (the worker's cache, kept fresh by pub/sub) before any frame.
            current = await _usable_key(portal, member, key)
            if current is None:
                return
            key = current
            frame = parse_frame(raw)
            changed = chat.hub.room_changed.get(room.name, 0.0)
            if frame.type in SPEAKING and changed >= read_at:
                # Its settings changed, or it was deleted, since the socket read it.
                read_at = time.monotonic()
                await room.refresh_from_db(fields=["title", "model", "system_prompt",
                                                   "params", "deleted_at", "last_message_at"])
            await _handle(portal, chat, member, key, room, frame)
        except FrameError as exc:
            member.deliver(event("error", code=exc.code, message=exc.message))
        except APIError as exc:
            member.deliver(event("error", code=exc.code or exc.type, message=exc.message))
        except (*RedisUnavailable, RedisError) as exc:
            log.warning("chat frame in room %s: Redis did not answer (%r)", room.name, exc)
            member.deliver(event("error", code="unavailable",
                                 message="The server could not handle that frame now; "
                                         "try again."))
        except Exception:  # ours, not the client's: say so and keep the socket usable
            log.exception("chat frame failed in room %s", room.name)
            member.deliver(event("error", code="internal",
                                 message="The server could not handle that frame."))


async def _handle(portal: PortalContext, chat: ChatService, member: Member, key: KeyRecord,
                  room: ChatRoom, frame: ClientFrame) -> None:
    if frame.type == "ping":
        member.deliver(event("pong", time=time.time()))
    elif frame.type == "auth":
        raise FrameError("bad_frame", "Already authenticated.")
    elif frame.type == "history":
        query = ChatMessage.filter(room_id=room.id)
        if frame.before is not None:
            query = query.filter(id__lt=frame.before)
        older = list(reversed(await query.order_by("-id").limit(frame.limit)))
        member.deliver(event("history", before=frame.before, own=await _own(key, older),
                             messages=[message_view(m) for m in older]))
    elif frame.type == "resume":
        missed = await ChatMessage.filter(room_id=room.id, id__gt=frame.after).order_by(
            "id").limit(500)
        member.deliver(event("history", after=frame.after, own=await _own(key, missed),
                             messages=[message_view(m) for m in missed]))
    elif frame.type == "stop":
        await chat.replies.request_stop(room.name, frame.reply_id, key.id)
    elif frame.type == "choose":
        assert frame.message_id is not None
        await _publish_flip(chat, room, await turns.choose(room, frame.message_id))
    elif frame.type in SPEAKING:
        if room.deleted_at is not None:
            raise FrameError("deleted", "This conversation was deleted.")
        if frame.type == "regenerate":
            await _regenerate(portal, chat, key, room, frame)
        else:
            await _message(portal, chat, member, key, room, frame)


async def _own(key: KeyRecord, messages: list[ChatMessage]) -> list[int]:
    """Which of ``messages`` the key's account said (it may edit the last of them)."""
    senders = {m.key_id for m in messages if m.role == "user" and m.key_id is not None}
    if not senders:
        return []
    ours = {row.id for row in await ApiKey.filter(id__in=senders,
                                                  account_id=key.account_id).only("id")}
    return [m.id for m in messages if m.role == "user" and m.key_id in ours]


async def _publish_flip(chat: ChatService, room: ChatRoom, flip: turns.Flip) -> None:
    if flip.show or flip.hide:
        await chat.hub.publish(room.name, event("chosen", show=flip.show, hide=flip.hide))


async def _usable_key(portal: PortalContext, member: Member,
                      key: KeyRecord) -> KeyRecord | None:
    """The key's current record if the rule lets it through; else the socket closes."""
    hit, record = portal.keys.cached(key.prefix)
    if not hit:
        record = await portal.keys.lookup(key.prefix)
    refusal = KeyRefusal.REVOKED if record is None else record.refusal(time.time())
    if refusal is None:
        return record
    code, error = refusal_close(refusal)
    member.close(f"key {refusal}", code,
                 last=event("error", code=error, message=f"{refusal.message} The socket closes."))
    return None


def _chat_model(portal: PortalContext, room: ChatRoom, name: str) -> ModelInfo:
    """The model a question goes to: the frame's, the room's, the default, or the first."""
    return chat_model(portal.registry, name or room.model or portal.settings.chat_default_model
                      or next(iter(sorted(m.name for m in portal.registry.models.values()
                                          if m.kind == "generate")), ""))


def _asking(room: ChatRoom, frame: ClientFrame) -> tuple[str, dict[str, Any]]:
    """The system prompt and sampling settings of a reply: the room's, then the frame's."""
    system = frame.system if frame.system is not None else room.system_prompt
    return system, {**(room.params or {}), **frame.params}


async def _message(portal: PortalContext, chat: ChatService, member: Member, key: KeyRecord,
                   room: ChatRoom, frame: ClientFrame) -> None:
    """A person speaks (``message``), or says their last message again (``edit``)."""
    model = _chat_model(portal, room, frame.model) if frame.ask else None
    if frame.type == "edit":
        assert frame.message_id is not None
        old = await turns.editable(room, frame.message_id, key.account_id)
        question, flip = await turns.edit(old, frame.text, author=key.name, key_id=key.id)
        await _publish_flip(chat, room, flip)
    else:
        question = await ChatMessage.create(room_id=room.id, role="user", author=key.name,
                                            key_id=key.id, content=frame.text)
    titled = await touch(room, frame.text)
    member.deliver(event("sent", id=question.id))  # so the sender knows which reply is theirs
    await chat.hub.publish(room.name, event("message", **message_view(question)))
    if titled:
        await chat.hub.publish(room.name, room_event(room))
    if model is not None:
        system, params = _asking(room, frame)
        chat.replies.start(room.name, key, question, model, system=system, params=params)


async def _regenerate(portal: PortalContext, chat: ChatService, key: KeyRecord, room: ChatRoom,
                      frame: ClientFrame) -> None:
    """Another reply to the last question, billed to whoever asks for it."""
    assert frame.reply_id is not None
    question, old = await turns.regenerable(room, frame.reply_id)
    model = _chat_model(portal, room, frame.model or old.model)
    await _publish_flip(chat, room, await turns.hide_replies(question))
    system, params = _asking(room, frame)
    chat.replies.start(room.name, key, question, model, system=system, params=params,
                       variant_of=turns.root(old))
