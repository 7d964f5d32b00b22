"""An account's conversations: which rooms it may read, its sidebar, search, settings.

One rule says who may read a room (:func:`readable_room`): a public room is open to
every account, a private room only to the account it belongs to, and a deleted one
to nobody. The sidebar is the account's memberships: its own private rooms, and the
public rooms it joined, pinned first, then newest first. Deleting a private room
marks it deleted (it can be restored until :mod:`dramatiq_actors.conversations`
purges it); deleting a public room from the sidebar only leaves it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from tortoise.expressions import F, Q
from tortoise.functions import Coalesce

from edge.chat.protocol import FrameError, event
from edge.db.models import ChatMembership, ChatMessage, ChatRoom

if TYPE_CHECKING:
    from edge.fleet.registry import ModelInfo, Registry

__all__ = ["LIST_LIMIT", "MAX_TITLE", "QUERY", "chat_model", "conversation_view", "forget", "join",
           "list_conversations", "open_room", "readable", "readable_room",
           "restore", "room_event", "soft_delete", "title_from", "touch"]

#: Conversations listed (and found by a search) at most.
LIST_LIMIT = 200
#: Longest title, in characters.
MAX_TITLE = 200
#: Characters of a made-up title (from the first message).
AUTO_TITLE = 60
#: Characters around a search hit shown in the sidebar.
SNIPPET = 80
#: Seconds within which a room's last message time is not written again: the sidebar's
#: order needs no finer clock, and a busy room would otherwise write on every message.
TOUCH_EVERY = 30.0
#: What a search may be: printable text of sensible length.
QUERY = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


def chat_model(registry: Registry, name: str) -> ModelInfo:
    """The model named ``name`` if a room may talk with it: it exists and generates text.

    Raises:
      FrameError: ``model_not_found`` or ``model_kind_mismatch`` (the API says the same
        in its own shape).
    """
    model = registry.model(name)
    if model is None:
        raise FrameError("model_not_found", f"No model named {name!r}.")
    if model.kind != "generate":
        raise FrameError("model_kind_mismatch", f"The model {name!r} is a {model.kind} "
                         "model: it does not chat.")
    return model


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def readable(room: ChatRoom, account_id: int) -> bool:
    """The one rule: a room not deleted, and public or the account's own."""
    return room.deleted_at is None and (not room.private or room.account_id == account_id)


async def readable_room(account_id: int, name: str) -> ChatRoom | None:
    """The room ``name`` if ``account_id`` may read it (:func:`readable`)."""
    room = await ChatRoom.get_or_none(name=name)
    return room if room is not None and readable(room, account_id) else None


async def open_room(account_id: int, key_id: int, name: str) -> ChatRoom | None:
    """The room a socket joins: an unknown name makes a public room; None: not readable."""
    room, created = await ChatRoom.get_or_create(
        name=name, defaults={"created_by_id": key_id, "account_id": account_id})
    return room if created or readable(room, account_id) else None


async def join(account_id: int, room: ChatRoom) -> None:
    """Put ``room`` in the account's sidebar (once; a rejoined room comes back).

    A read first: most joins are of rooms already there, and a write would queue
    behind every other worker's on SQLite.
    """
    if not await ChatMembership.exists(account_id=account_id, room_id=room.id):
        await ChatMembership.get_or_create(account_id=account_id, room_id=room.id)


#: Markdown's marks, which a title shows as plain text.
MARKS = re.compile(r"[*_`#>~|]+|\$\$?|\\[()\[\]]")


def title_from(text: str) -> str:
    """A title for a conversation from its first message: its words before any code
    block, without Markdown's marks, cut at a word."""
    prose = text.split("```", 1)[0].split("~~~", 1)[0]
    line = " ".join(MARKS.sub("", prose).split()) or " ".join(MARKS.sub("", text).split())
    if len(line) <= AUTO_TITLE:
        return line
    cut = line[:AUTO_TITLE].rsplit(" ", 1)[0] or line[:AUTO_TITLE]
    return cut + "…"


async def touch(room: ChatRoom, text: str) -> bool:
    """A person spoke: the room moves to the top (its time written at most every
    :data:`TOUCH_EVERY` seconds), and gets a title if it has none.

    Returns whether it got its title now (the room's pages should hear of it).
    """
    stamp = now()
    last = room.last_message_at
    if last is None or (stamp - last).total_seconds() >= TOUCH_EVERY:
        await ChatRoom.filter(id=room.id).update(last_message_at=stamp)
        room.last_message_at = stamp
    if room.title:
        return False
    title = title_from(text)[:MAX_TITLE]
    if not await ChatRoom.filter(id=room.id, title="").update(title=title):
        return False
    room.title = title
    return True


def room_event(room: ChatRoom) -> str:
    """The ``room`` event: its title or settings changed; open pages show them."""
    return event("room", title=room.title or room.name, model=room.model or None,
                 system=room.system_prompt, params=room.params or {})


def conversation_view(room: ChatRoom, membership: ChatMembership | None,
                      account_id: int) -> dict[str, Any]:
    """A conversation as the sidebar and the API show it."""
    return {
        "name": room.name, "title": room.title or room.name, "private": room.private,
        "mine": room.account_id == account_id, "model": room.model or None,
        "system_prompt": room.system_prompt, "params": room.params or {},
        "pinned": bool(membership and membership.pinned),
        "last_message_at": room.last_message_at.isoformat() if room.last_message_at else None,
        "created_at": room.created_at.isoformat(),
        "deleted_at": room.deleted_at.isoformat() if room.deleted_at else None,
    }


async def list_conversations(account_id: int, *, query: str = "", deleted: bool = False,
                             limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    """The account's sidebar, pinned first, then by last message; or its deleted rooms.

    With ``query``, only conversations whose title or any message holds it (any case),
    each with a ``match``: a snippet of the newest message that holds it.
    """
    visible = Q(room__private=False) | Q(room__account_id=account_id)
    rows = ChatMembership.filter(visible, account_id=account_id,
                                 room__deleted_at__isnull=not deleted)
    if deleted:
        rows = rows.filter(room__account_id=account_id)
    matched: dict[int, str] = {}
    if query:
        hits = await ChatMessage.filter(
            content__icontains=query, room__memberships__account_id=account_id,
        ).order_by("-id").limit(1000).values("room_id", "content")
        for hit in hits:
            matched.setdefault(hit["room_id"], snippet(hit["content"], query))
        rows = rows.filter(Q(room__title__icontains=query) | Q(room__name__icontains=query)
                           | Q(room_id__in=list(matched)))
    active = Coalesce(F("room__last_message_at"), F("room__created_at"))
    memberships = await (rows.select_related("room").annotate(active=active)
                         .order_by("-pinned", "-active", "-id").limit(limit))
    views = []
    for membership in memberships:
        view = conversation_view(membership.room, membership, account_id)
        if query:
            view["match"] = matched.get(membership.room_id)
        views.append(view)
    return views


def snippet(text: str, query: str) -> str:
    """The part of ``text`` around the first ``query``, on one line."""
    flat = " ".join(text.split())
    at = flat.lower().find(query.lower())
    if at < 0:
        return flat[:SNIPPET]
    start = max(0, at - SNIPPET // 2)
    piece = flat[start:start + SNIPPET]
    return ("…" if start else "") + piece + ("…" if start + SNIPPET < len(flat) else "")


async def soft_delete(room: ChatRoom) -> None:
    """Hide a private room from everyone; its share links stop; it can still be restored."""
    room.deleted_at = now()
    await room.save(update_fields=["deleted_at"])


async def restore(room: ChatRoom) -> None:
    room.deleted_at = None
    await room.save(update_fields=["deleted_at"])


async def forget(account_id: int, room: ChatRoom) -> None:
    """Take a public room out of the account's sidebar (joining it again brings it back)."""
    await ChatMembership.filter(account_id=account_id, room_id=room.id).delete()

