"""Real-time chat rooms: people and a model, over WebSocket, fanned out through Redis."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.chat.hub import RoomHub
    from edge.chat.limits import RoomQuota
    from edge.chat.replies import ReplyRunner

__all__ = ["ChatService"]


@dataclasses.dataclass
class ChatService:
    """A worker's chat: its rooms' fan-out, the replies it runs, the room quota."""

    hub: RoomHub
    replies: ReplyRunner
    quota: RoomQuota
