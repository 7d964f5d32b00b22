"""The chat wire protocol: frames a client may send, events the server sends.

Client → server (JSON text frames, ``type`` first):

    {"type": "auth", "key": "sk-ip-…"}                      programs without a session
    {"type": "message", "text": "…", "model": "…", "system": "…", "ask": true,
     "params": {"temperature": 0.7, "max_tokens": 256, "top_p": 1}}
                                                            ("ask": false: no reply)
    {"type": "stop", "reply_id": 123}                       cancel a reply (its asker)
    {"type": "regenerate", "reply_id": 123, "model": "…", "system": "…", "params": {…}}
                                 another reply to the last question (the old one is kept)
    {"type": "edit", "message_id": 122, "text": "…", "model": "…", "ask": true, …}
                                 a new version of your last message, and a reply to it
    {"type": "choose", "message_id": 121}                   show this alternative instead
    {"type": "history", "before": 456, "limit": 50}         older messages
    {"type": "resume", "after": 789}                        what I missed
    {"type": "ping"}

Server → client: ``ready``, ``message``, ``delta``, ``done``, ``status``,
``presence`` (who ``joined`` and ``left`` lately, up to 100 ``members``
and their ``count``), ``history``, ``error``, ``pong``, ``sent`` (to the sender
only: the id its message got, so it knows which reply is its own), ``chosen`` (which
alternatives are now shown: ``show`` and ``hide``, lists of ids) and ``room`` (its
title, model, system prompt or sampling settings changed). Every frame is checked here; a
bad one becomes a :class:`FrameError` for an ``error`` event, never a crash.

Close codes: a socket the server ends gets an ``error`` event first (``code``
``refused``, or ``invalid_api_key`` / ``key_frozen`` for a key refused while the
socket is open), then one of these WebSocket close codes with a reason::

    1000  normal (the client left, or the server shuts down)
    1008  policy: the client stopped reading (its queue filled)
    1013  try again later: this worker has too many sockets, or is busy, or
          Redis did not answer while the socket was set up
    4001  the key is unknown, revoked or expired (or no auth frame came)
    4003  the key is frozen by a payment dispute, or the origin may not open sockets
    4004  no such room name
    4008  the key is in too many rooms at once
    4029  the key has too many sockets open at once
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from edge.identity.keys import KeyRefusal
from edge.jsonbody import loads

__all__ = ["CLOSE_BAD_KEY", "CLOSE_BUSY", "CLOSE_FROZEN", "CLOSE_NO_ROOM", "CLOSE_POLICY",
           "CLOSE_TOO_MANY_ROOMS", "CLOSE_TOO_MANY_SOCKETS", "MAX_SYSTEM", "ROOM_NAME",
           "ClientFrame", "FrameError", "check_params", "event", "parse_frame", "refusal_close"]

#: The client stopped reading (RFC 6455's policy violation).
CLOSE_POLICY = 1008
#: Try again later (RFC 6455): too many sockets on this worker, busy, or Redis away.
CLOSE_BUSY = 1013
#: The key is unknown, revoked or expired.
CLOSE_BAD_KEY = 4001
#: The key is frozen, or the origin may not open sockets.
CLOSE_FROZEN = 4003
#: No such room name.
CLOSE_NO_ROOM = 4004
#: The key is in too many rooms at once.
CLOSE_TOO_MANY_ROOMS = 4008
#: The key has too many sockets open at once.
CLOSE_TOO_MANY_SOCKETS = 4029

#: What a room name may be.
ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Longest text of a message, in characters.
MAX_TEXT = 8_000
#: Longest system prompt, in characters.
MAX_SYSTEM = 4_000
#: Largest frame accepted before parsing, in bytes.
MAX_FRAME = 32_768
#: Sampling parameters passed on to the model, with their allowed ranges.
PARAMS: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "max_tokens": (int, 1, 8192),
    "presence_penalty": (float, -2.0, 2.0),
    "frequency_penalty": (float, -2.0, 2.0),
    "seed": (int, 0, 2**31 - 1),
}
TYPES = ("auth", "message", "stop", "history", "resume", "ping", "regenerate", "edit",
         "choose")


class FrameError(ValueError):
    """A client frame that cannot be used; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class ClientFrame:
    type: str
    text: str = ""
    key: str = ""
    model: str = ""
    system: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    ask: bool = True
    reply_id: int | None = None
    message_id: int | None = None
    before: int | None = None
    after: int | None = None
    limit: int = 50


def parse_frame(raw: str | bytes) -> ClientFrame:
    """Check one frame.

    Raises:
      FrameError: with code ``too_large``, ``not_json``, ``bad_frame``,
        ``unknown_type`` or ``bad_field``.
    """
    if len(raw) > MAX_FRAME:
        raise FrameError("too_large", f"Frames may be at most {MAX_FRAME} bytes.")
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FrameError("not_json", "Frames must be JSON objects.") from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "Frames must be JSON objects.")
    kind = data.get("type")
    if kind not in TYPES:
        raise FrameError("unknown_type", f"Unknown frame type {kind!r}; one of {TYPES}.")
    if kind == "auth":
        return ClientFrame("auth", key=_string(data, "key", 200, required=True))
    if kind in ("message", "edit"):
        text = _string(data, "text", MAX_TEXT, required=True)
        if not text.strip():
            raise FrameError("bad_field", "'text' is empty.")
        ask = data.get("ask", True)
        if not isinstance(ask, bool):
            raise FrameError("bad_field", "'ask' must be true or false.")
        message_id = _int(data, "message_id", required=True) if kind == "edit" else None
        return ClientFrame(kind, text=text, ask=ask, message_id=message_id, **_asking(data))
    if kind == "regenerate":
        return ClientFrame("regenerate", reply_id=_int(data, "reply_id", required=True),
                           **_asking(data))
    if kind == "choose":
        return ClientFrame("choose", message_id=_int(data, "message_id", required=True))
    if kind == "stop":
        return ClientFrame("stop", reply_id=_int(data, "reply_id", required=False))
    if kind == "history":
        return ClientFrame("history", before=_int(data, "before", required=False),
                           limit=min(200, max(1, _int(data, "limit", required=False) or 50)))
    if kind == "resume":
        return ClientFrame("resume", after=_int(data, "after", required=True))
    return ClientFrame("ping")


def _asking(data: dict) -> dict[str, Any]:
    """The model, system prompt and sampling settings a frame that asks may name."""
    system = data.get("system")
    if system is not None:
        system = _string(data, "system", MAX_SYSTEM)
    return {"model": _string(data, "model", 128), "system": system,
            "params": check_params(data.get("params"))}


def _string(data: dict, name: str, limit: int, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise FrameError("bad_field", f"'{name}' must be a string.")
    if len(value) > limit:
        raise FrameError("too_large", f"'{name}' may be at most {limit} characters.")
    if "\x00" in value:  # no database stores it in text
        raise FrameError("bad_field", f"'{name}' may not contain NUL characters.")
    return value


def _int(data: dict, name: str, *, required: bool) -> int | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise FrameError("bad_field", f"'{name}' must be a non-negative integer.")
    return value


def check_params(raw: Any) -> dict[str, Any]:
    """Sampling settings, each known and within its range (:data:`PARAMS`)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FrameError("bad_field", "'params' must be an object.")
    params: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in PARAMS:
            raise FrameError("bad_field", f"Unknown parameter {name!r}; one of "
                             f"{', '.join(PARAMS)}.")
        kind, low, high = PARAMS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                kind is int and not isinstance(value, int)):
            noun = "an integer" if kind is int else "a number"
            raise FrameError("bad_field", f"'{name}' must be {noun}.")
        if not low <= value <= high:
            raise FrameError("bad_field", f"'{name}' must be between {low} and {high}.")
        params[name] = value
    return params


def refusal_close(refusal: KeyRefusal) -> tuple[int, str]:
    """The close code and ``error`` event code of a socket whose key is refused."""
    if refusal is KeyRefusal.FROZEN:
        return CLOSE_FROZEN, "key_frozen"
    return CLOSE_BAD_KEY, "invalid_api_key"


def event(kind: str, /, **fields: Any) -> str:
    """A server event as the JSON text sent to clients."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), default=str)
