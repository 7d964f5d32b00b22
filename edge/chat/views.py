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
import re
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.exceptions import WebsocketClosed
from sanic.response import json as json_response
from websockets.exceptions import ConnectionClosed as _WebsocketsClosed

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
    ClientFrame,
    FrameError,
    event,
    parse_frame,
    refusal_close,
)
from edge.db.models import ChatMessage, ChatRoom
from edge.errors import APIError, InvalidRequest
from edge.identity.auth import authenticate, check_key, credentials, require_usable
from edge.identity.keys import KeyRefusal
from edge.identity.sessions import COOKIE, session_key
from edge.jsonbody import json_object
from edge.store.hotstore import RedisUnavailable

if TYPE_CHECKING:
    from edge.chat import ChatService
    from edge.context import PortalContext
    from edge.identity.keys import KeyRecord

__all__ = ["bp", "message_view"]

log = logging.getLogger(__name__)

#: A peer gone, as the websockets library or Sanic says it.
ConnectionClosed = (_WebsocketsClosed, WebsocketClosed)

#: Seconds a closing socket's writer gets to send what is queued.
WRITER_DRAIN = 2.0

bp = Blueprint("chat")

#: What a room name may be.
ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Seconds a program has to send its ``auth`` frame.
AUTH_TIMEOUT = 10.0
#: Messages shown when joining.
RECENT = 50

try:
    from sanic.server.websockets.impl import WebsocketImplProtocol as Socket
except ImportError:  # pragma: no cover
    Socket = Any  # type: ignore[misc,assignment]


def message_view(message: ChatMessage) -> dict[str, Any]:
    return {"id": message.id, "role": message.role, "who": message.author,
            "text": message.content, "model": message.model or None,
            "reply_to": message.reply_to, "status": message.status,
            "usage": {"prompt_tokens": message.prompt_tokens,
                      "completion_tokens": message.completion_tokens}
            if message.role == "assistant" else None,
            "time": message.created_at.isoformat()}


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
            row, _ = await ChatRoom.get_or_create(name=room, defaults={"created_by_id": key.id})
            # Join first, so nothing published from now on is missed; the history read
            # after may repeat an event, which clients drop by id. ``ready`` goes out
            # before anything queued meanwhile.
            await chat.hub.join(member)
            recent = list(reversed(await ChatMessage.filter(room_id=row.id).order_by("-id")
                                   .limit(RECENT)))
            names, count = await chat.hub.members(room)
        ready = event("ready", room=room, you=key.name, worker=portal.worker_id,
                      private=row.private, model=row.model or None, members=names,
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
        member.deliver(event("history", before=frame.before,
                             messages=[message_view(m) for m in older]))
    elif frame.type == "resume":
        missed = await ChatMessage.filter(room_id=room.id, id__gt=frame.after).order_by(
            "id").limit(500)
        member.deliver(event("history", after=frame.after,
                             messages=[message_view(m) for m in missed]))
    elif frame.type == "stop":
        await chat.replies.request_stop(room.name, frame.reply_id, key.id)
    elif frame.type == "message":
        await _message(portal, chat, member, key, room, frame)


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


async def _message(portal: PortalContext, chat: ChatService, member: Member, key: KeyRecord,
                   room: ChatRoom, frame: ClientFrame) -> None:
    model = None
    if frame.ask:
        name = frame.model or room.model or portal.settings.chat_default_model or next(
            iter(sorted(m.name for m in portal.registry.models.values()
                        if m.kind == "generate")), "")
        model = portal.registry.model(name)
        if model is None:
            raise FrameError("model_not_found", f"No model named {name!r}.")
        if model.kind != "generate":
            raise FrameError("model_kind_mismatch", f"The model {name!r} is a {model.kind} "
                             "model: it does not chat.")
    question = await ChatMessage.create(room_id=room.id, role="user", author=key.name,
                                        key_id=key.id, content=frame.text)
    member.deliver(event("sent", id=question.id))  # so the sender knows which reply is theirs
    await chat.hub.publish(room.name, event(
        "message", id=question.id, role="user", who=key.name, text=frame.text,
        time=question.created_at.isoformat()))
    if model is not None:
        system = frame.system if frame.system is not None else room.system_prompt
        chat.replies.start(room.name, key, question, model, system=system,
                           params=frame.params)


@bp.post("/api/rooms")
async def create_room(request: Request):
    """A room named by you, or (``"private": true``) an unguessable one."""
    portal = request.app.ctx.portal
    key = await _api_key(request)
    body = json_object(request.body, empty_ok=True)
    private = body.get("private") is True
    name = body.get("name")
    if private or not name:
        name = "p-" + secrets.token_urlsafe(12).replace("_", "-")
    if not isinstance(name, str) or not ROOM_NAME.match(name):
        raise InvalidRequest("Room names are 1-64 letters, digits, - and _.", param="name")
    model = body.get("model") or ""
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", param="model")
    info = portal.registry.model(model) if model else None
    if model and info is None:
        raise InvalidRequest(f"No model named {model!r}.", param="model")
    if info is not None and info.kind != "generate":
        raise InvalidRequest(f"The model {model!r} is a {info.kind} model: it does not chat.",
                             param="model", code="model_kind_mismatch")
    system = body.get("system_prompt") or ""
    if not isinstance(system, str) or len(system) > 4000:
        raise InvalidRequest("'system_prompt' must be a string of at most 4000 characters.",
                             param="system_prompt")
    row, created = await ChatRoom.get_or_create(name=name, defaults={
        "private": private, "created_by_id": key.id, "model": model, "system_prompt": system})
    return json_response({"name": row.name, "private": row.private, "model": row.model or None,
                          "created": created}, status=201 if created else 200)


@bp.get("/api/rooms")
async def list_rooms(request: Request):
    """Public rooms, busiest first, and the caller's own private ones."""
    key = await _api_key(request)
    rooms = await ChatRoom.filter(private=False).order_by("-id").limit(100)
    mine = await ChatRoom.filter(private=True, created_by_id=key.id).order_by("-id").limit(50)
    return json_response({"data": [{"name": r.name, "private": r.private,
                                    "model": r.model or None} for r in [*mine, *rooms]]})


async def _api_key(request: Request) -> KeyRecord:
    portal = request.app.ctx.portal
    key = await session_key(portal, request.cookies.get(COOKIE))
    if key is not None:
        from edge.identity.csrf import check_csrf

        await check_csrf(request)
        return require_usable(key)  # the session lets a frozen key read its account only
    return await authenticate(portal, credentials(request.headers))
