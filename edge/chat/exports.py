"""A conversation written out: Markdown and JSON exports, and share-link snapshots.

An export is for its owner: the JSON keeps every message with its alternatives,
tokens and cost; the Markdown reads as the conversation shown (current messages
only). A snapshot is for anyone with the link: the current messages as they are at
that moment, with who said them and when, but no costs, keys or alternatives.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from edge.chat.replies import message_view
from edge.db.models import ChatMessage, ChatRoom

__all__ = ["MAX_MESSAGES", "as_json", "as_markdown", "file_name", "snapshot"]

#: Messages written out at most (the newest are kept).
MAX_MESSAGES = 20_000


def _stamp(at: dt.datetime | None = None) -> str:
    return (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")


async def _messages(room: ChatRoom, *, current_only: bool) -> list[ChatMessage]:
    query = ChatMessage.filter(room_id=room.id)
    if current_only:
        query = query.filter(current=True)
    return list(reversed(await query.order_by("-id").limit(MAX_MESSAGES)))


def file_name(room: ChatRoom, extension: str) -> str:
    """A download's name: the title made safe for every file system."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", room.title).strip("-")[:60].lower()
    return f"{slug or room.name}.{extension}"


def _header(room: ChatRoom) -> dict[str, Any]:
    return {"name": room.name, "title": room.title or room.name, "private": room.private,
            "model": room.model or None, "system_prompt": room.system_prompt,
            "params": room.params or {}, "created_at": _stamp(room.created_at)}


async def as_json(room: ChatRoom) -> dict[str, Any]:
    """Everything the conversation holds, alternatives included (``current`` marks them)."""
    return {"object": "conversation", **_header(room), "exported_at": _stamp(),
            "messages": [message_view(m) for m in await _messages(room, current_only=False)]}


async def as_markdown(room: ChatRoom) -> str:
    """The conversation as shown, as a Markdown document."""
    lines = [f"# {room.title or room.name}", "",
             f"- Conversation: `{room.name}`{' (private)' if room.private else ''}"]
    if room.model:
        lines.append(f"- Model: {room.model}")
    lines += [f"- Exported: {_stamp()}", ""]
    if room.system_prompt:
        lines += ["## System prompt", "", *[f"> {line}" for line in
                                           room.system_prompt.splitlines()], ""]
    lines += ["---", ""]
    for message in await _messages(room, current_only=True):
        view = message_view(message)
        head = [f"**{message.author}**", _stamp(message.created_at)]
        if view["usage"] is not None:
            usage = view["usage"]
            head.append(f"{usage['prompt_tokens']} + {usage['completion_tokens']} tokens")
            head.append(f"${view['cost']}")
            if message.status != "done":
                head.append(message.status)
        lines += [" · ".join(head), "", message.content or "_(no text)_", ""]
    return "\n".join(lines)


async def snapshot(room: ChatRoom) -> dict[str, Any]:
    """What a share link shows: the current messages now, nothing about money or keys."""
    return {"title": room.title or room.name, "model": room.model or None,
            "taken_at": _stamp(),
            "messages": [{"role": m.role, "who": m.author, "text": m.content,
                          "model": m.model or None, "status": m.status,
                          "time": _stamp(m.created_at)}
                         for m in await _messages(room, current_only=True)]}
