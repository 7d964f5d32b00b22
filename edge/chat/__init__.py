"""Real-time chat rooms: people and a model, over WebSocket, fanned out through Redis."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge.chat.limits import SocketGate

if TYPE_CHECKING:
    from edge.chat.guard import KeyGuard
    from edge.chat.hub import RoomHub
    from edge.chat.limits import RoomQuota
    from edge.chat.replies import ReplyRunner

__all__ = ["ChatService"]


@dataclasses.dataclass
class ChatService:
    """A worker's chat: its rooms' fan-out, the replies it runs, the room quota, the
    bound on its sockets, and the guard that closes sockets of refused keys."""

    hub: RoomHub
    replies: ReplyRunner
    quota: RoomQuota
    gate: SocketGate = dataclasses.field(default_factory=SocketGate)
    #: Started with the server (:func:`edge.chat.views.start_key_guard`).
    guard: KeyGuard | None = None
