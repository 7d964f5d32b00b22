"""The rooms and conversations API: make a room, the sidebar, settings, exports, shares.

Every route takes the browser's session (with its CSRF token on changes) or an API
key, as the rest of ``/api`` does. A conversation another account may not read
(:func:`~edge.chat.conversations.readable`) is a 404, never a 403: its name is not
confirmed to exist. Changes to a room's title or settings are published to the room,
so every open page shows them.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from edge.chat import conversations, exports
from edge.chat.protocol import MAX_SYSTEM, ROOM_NAME, FrameError, check_params, event
from edge.db.models import ChatMembership, ChatRoom, ChatShare
from edge.errors import InvalidRequest, NotFound, PermissionDenied
from edge.identity.auth import authenticate, credentials, require_usable
from edge.identity.csrf import check_csrf
from edge.identity.sessions import COOKIE, session_key
from edge.jsonbody import json_object

if TYPE_CHECKING:
    from edge.identity.keys import KeyRecord

__all__ = ["bp", "share_url"]

bp = Blueprint("chat_api")

#: Bytes of randomness in a share link (192 bits, URL-safe).
SHARE_TOKEN_BYTES = 24
#: Live share links one conversation may have.
MAX_SHARES = 20


async def chat_key(request: Request) -> KeyRecord:
    """The caller: the session's key (CSRF-checked when it changes something) or an API key."""
    portal = request.app.ctx.portal
    key = await session_key(portal, request.cookies.get(COOKIE))
    if key is not None:
        if request.method not in ("GET", "HEAD"):
            await check_csrf(request)
        key = require_usable(key)  # the session lets a frozen key read its account only
    else:
        key = await authenticate(portal, credentials(request.headers))
    forbidden = key.forbids(route="chat")
    if forbidden is not None:
        raise PermissionDenied(forbidden)
    return key


async def _conversation(key: KeyRecord, name: str) -> ChatRoom:
    room = await conversations.readable_room(key.account_id, name)
    if room is None:
        raise NotFound(f"No conversation named {name!r}.")
    return room


async def _answer(key: KeyRecord, room: ChatRoom) -> HTTPResponse:
    """The conversation as the caller sees it (with its own pin)."""
    membership = await ChatMembership.get_or_none(account_id=key.account_id, room_id=room.id)
    return json_response(conversations.conversation_view(room, membership, key.account_id))


def _owned(key: KeyRecord, room: ChatRoom) -> None:
    if room.account_id != key.account_id:
        raise PermissionDenied("Only the account that made this room can change it.")


def _chat_model(request: Request, body: dict[str, Any]) -> str:
    model = body.get("model") or ""
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", param="model")
    if model:
        try:
            conversations.chat_model(request.app.ctx.portal.registry, model)
        except FrameError as exc:
            raise InvalidRequest(exc.message, param="model", code=exc.code) from None
    return model


#: Characters no title holds (control characters: a title is one line of text).
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _system(body: dict[str, Any]) -> str:
    system = body.get("system_prompt") or ""
    if not isinstance(system, str) or len(system) > MAX_SYSTEM or "\x00" in system:
        raise InvalidRequest(f"'system_prompt' must be a string of at most {MAX_SYSTEM} "
                             "characters, without NUL characters.", param="system_prompt")
    return system


def _title(body: dict[str, Any]) -> str:
    title = body.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > conversations.MAX_TITLE:
        raise InvalidRequest(f"'title' must be a string of 1 to {conversations.MAX_TITLE} "
                             "characters.", param="title")
    title = " ".join(title.split())
    if CONTROL.search(title):
        raise InvalidRequest("'title' may not contain control characters.", param="title")
    return title


def _params(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return check_params(body.get("params"))
    except FrameError as exc:
        raise InvalidRequest(exc.message, param="params") from None


@bp.post("/api/rooms")
async def create_room(request: Request):
    """A room named by you, or (``"private": true``) an unguessable one of your own."""
    key = await chat_key(request)
    body = json_object(request.body, empty_ok=True)
    private = body.get("private") is True
    name = body.get("name")
    if private or not name:
        name = "p-" + secrets.token_urlsafe(12).replace("_", "-")
    if not isinstance(name, str) or not ROOM_NAME.match(name):
        raise InvalidRequest("Room names are 1-64 letters, digits, - and _.", param="name")
    fields = {"private": private, "created_by_id": key.id, "account_id": key.account_id,
              "model": _chat_model(request, body), "system_prompt": _system(body),
              "params": _params(body)}
    if body.get("title") is not None:
        fields["title"] = _title(body)
    row, created = await ChatRoom.get_or_create(name=name, defaults=fields)
    if not conversations.readable(row, key.account_id):
        raise InvalidRequest(f"The room name {name!r} is taken.", param="name")
    await conversations.join(key.account_id, row)
    return json_response({"name": row.name, "private": row.private, "model": row.model or None,
                          "title": row.title or row.name, "created": created},
                         status=201 if created else 200)


@bp.get("/api/rooms")
async def list_rooms(request: Request):
    """The public rooms, newest first, and the caller's own private ones."""
    key = await chat_key(request)
    rooms = await ChatRoom.filter(private=False, deleted_at=None).order_by("-id").limit(100)
    mine = await ChatRoom.filter(private=True, account_id=key.account_id,
                                 deleted_at=None).order_by("-id").limit(50)
    return json_response({"data": [{"name": r.name, "private": r.private,
                                    "model": r.model or None} for r in [*mine, *rooms]]})


@bp.get("/api/conversations")
async def list_conversations(request: Request):
    """The caller's sidebar; ``?q=`` searches titles and messages, ``?deleted=1`` the bin."""
    key = await chat_key(request)
    query = request.args.get("q", "").strip()
    if query and not conversations.QUERY.match(query):
        raise InvalidRequest("'q' must be 1-200 printable characters.", param="q")
    deleted = request.args.get("deleted", "") in ("1", "true")
    data = await conversations.list_conversations(key.account_id, query=query, deleted=deleted)
    return json_response({"object": "list", "data": data})


@bp.get("/api/conversations/<name:str>")
async def get_conversation(request: Request, name: str):
    key = await chat_key(request)
    room = await _conversation(key, name)
    return await _answer(key, room)


@bp.patch("/api/conversations/<name:str>")
async def update_conversation(request: Request, name: str):
    """Rename, pin, or change the model, system prompt or sampling settings."""
    key = await chat_key(request)
    room = await _conversation(key, name)
    body = json_object(request.body)
    known = {"title", "pinned", "model", "system_prompt", "params"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidRequest(f"Unknown field {unknown[0]!r}; one of {', '.join(sorted(known))}.",
                             param=unknown[0])
    changes: dict[str, Any] = {}
    if "title" in body:
        changes["title"] = _title(body)
    if "model" in body:
        changes["model"] = _chat_model(request, body)
    if "system_prompt" in body:
        changes["system_prompt"] = _system(body)
    if "params" in body:
        changes["params"] = _params(body)
    pinned = body.get("pinned")
    if "pinned" in body and not isinstance(pinned, bool):
        raise InvalidRequest("'pinned' must be true or false.", param="pinned")
    if changes:
        _owned(key, room)
        await ChatRoom.filter(id=room.id).update(**changes)
        for field, value in changes.items():
            setattr(room, field, value)
        await request.app.ctx.chat.hub.publish(room.name, conversations.room_event(room))
    await conversations.join(key.account_id, room)
    if isinstance(pinned, bool):
        await ChatMembership.filter(account_id=key.account_id, room_id=room.id).update(
            pinned=pinned)
    return await _answer(key, room)


@bp.delete("/api/conversations/<name:str>")
async def delete_conversation(request: Request, name: str):
    """A private room of yours goes to the bin (restorable); a public one leaves your list."""
    key = await chat_key(request)
    room = await _conversation(key, name)
    if room.private:
        await conversations.soft_delete(room)
        await request.app.ctx.chat.hub.publish(room.name, event("room", deleted=True))
    else:
        await conversations.forget(key.account_id, room)
    days = request.app.ctx.portal.settings.chat_purge_days
    return json_response({"name": room.name, "deleted": True, "restorable": room.private,
                          "purged_after_days": days if room.private else None})


@bp.post("/api/conversations/<name:str>/restore")
async def restore_conversation(request: Request, name: str):
    key = await chat_key(request)
    room = await ChatRoom.get_or_none(name=name, account_id=key.account_id,
                                      deleted_at__isnull=False)
    if room is None:
        raise NotFound(f"No deleted conversation named {name!r}.")
    await conversations.restore(room)
    return await _answer(key, room)


@bp.get("/api/conversations/<name:str>/export")
async def export_conversation(request: Request, name: str):
    """``?format=markdown`` (the default) or ``json``, as a download."""
    key = await chat_key(request)
    room = await _conversation(key, name)
    kind = request.args.get("format", "markdown")
    if kind in ("markdown", "md"):
        body, extension, mime = (await exports.as_markdown(room)).encode(), "md", \
            "text/markdown; charset=utf-8"
    elif kind == "json":
        import json

        body = json.dumps(await exports.as_json(room), ensure_ascii=False, indent=1).encode()
        extension, mime = "json", "application/json"
    else:
        raise InvalidRequest("'format' must be markdown or json.", param="format")
    return HTTPResponse(body, content_type=mime, headers={
        "Content-Disposition": f'attachment; filename="{exports.file_name(room, extension)}"',
        "Cache-Control": "private, no-store"})


def share_url(request: Request, token: str) -> str:
    base: str = request.app.ctx.portal.settings.effective_public_url
    return base.rstrip("/") + f"/s/{token}"


def _share_view(request: Request, share: ChatShare) -> dict[str, Any]:
    return {"token": share.token, "url": share_url(request, share.token),
            "title": share.title, "created_at": share.created_at.isoformat(),
            "messages": len(share.snapshot.get("messages", []))}


@bp.post("/api/conversations/<name:str>/shares")
async def share_conversation(request: Request, name: str):
    """A read-only link to the conversation as it is now (later messages never show)."""
    key = await chat_key(request)
    room = await _conversation(key, name)
    if await ChatShare.filter(room_id=room.id, revoked_at=None).count() >= MAX_SHARES:
        raise InvalidRequest(f"A conversation may have {MAX_SHARES} live share links; "
                             "revoke one first.")
    snapshot = await exports.snapshot(room)
    share = await ChatShare.create(token=secrets.token_urlsafe(SHARE_TOKEN_BYTES),
                                   room_id=room.id, account_id=key.account_id,
                                   title=snapshot["title"][:200], snapshot=snapshot)
    return json_response(_share_view(request, share), status=201)


@bp.get("/api/conversations/<name:str>/shares")
async def list_shares(request: Request, name: str):
    key = await chat_key(request)
    room = await _conversation(key, name)
    shares = await ChatShare.filter(room_id=room.id, account_id=key.account_id,
                                    revoked_at=None).order_by("-id")
    return json_response({"object": "list", "data": [_share_view(request, s) for s in shares]})


@bp.delete("/api/shares/<token:str>")
async def revoke_share(request: Request, token: str):
    """The link stops working at once, for everyone."""
    key = await chat_key(request)
    share = await ChatShare.get_or_none(token=token, account_id=key.account_id,
                                        revoked_at=None)
    if share is None:
        raise NotFound("No such share link.")
    share.revoked_at = conversations.now()
    await share.save(update_fields=["revoked_at"])
    return json_response({"token": token, "revoked": True})
