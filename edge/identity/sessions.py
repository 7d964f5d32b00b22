"""Browser sessions: a random cookie that stands for an API key, kept in Redis.

The cookie holds only a random id; Redis keeps its SHA-256 (a dump of Redis
does not hand out live sessions) with the key's id and prefix and the session's
CSRF token. The key itself is never stored: every use looks the key record up
again, so a revoked key ends its sessions at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
from typing import TYPE_CHECKING, Protocol, TypeGuard

from edge.identity.auth import same_secret
from edge.store import keys as redis_keys
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.identity.keys import KeyDirectory, KeyRecord
    from edge.store.hotstore import HotStore

__all__ = ["COOKIE", "CSRF_COOKIE", "Session", "Sessions", "same_token", "session_key",
           "well_formed"]

#: Name of the session cookie.
COOKIE = "portal_session"
#: Name of the cookie that carries the CSRF token of forms shown before login.
CSRF_COOKIE = "portal_csrf"
#: Seconds a session lasts without use.
TTL = 7 * 24 * 3600
#: What ``secrets.token_urlsafe`` makes.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclasses.dataclass(frozen=True)
class Session:
    id: str
    key_id: int
    prefix: str
    csrf: str


def same_token(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return same_secret(given, expected)


def well_formed(session_id: str | None) -> TypeGuard[str]:
    """A session id as ``create`` makes them; anything else (odd bytes in a cookie) is none."""
    return session_id is not None and len(session_id) <= 100 \
        and _SESSION_ID.fullmatch(session_id) is not None


class Sessions:
    def __init__(self, store: HotStore) -> None:
        self.store = store

    def _key(self, session_id: str) -> str:
        return redis_keys.session(self.store.ns, hashlib.sha256(session_id.encode()).hexdigest())

    async def create(self, key_id: int, prefix: str) -> Session:
        session = Session(secrets.token_urlsafe(32), key_id, prefix, secrets.token_urlsafe(24))
        await self.store.client.hset(self._key(session.id), mapping={
            "key": key_id, "prefix": prefix, "csrf": session.csrf})
        await self.store.client.expire(self._key(session.id), TTL)
        return session

    async def load(self, session_id: str | None) -> Session | None:
        if not well_formed(session_id):
            return None
        raw = await self.store.client.hgetall(self._key(session_id))
        if not raw:
            return None
        await self.store.client.expire(self._key(session_id), TTL)
        return Session(session_id, int(raw[b"key"]), text(raw[b"prefix"]), text(raw[b"csrf"]))

    async def destroy(self, session_id: str | None) -> None:
        if well_formed(session_id):
            await self.store.client.delete(self._key(session_id))


class SessionContext(Protocol):
    """What finding a session's key needs: a worker's ``PortalContext`` has both."""

    @property
    def sessions(self) -> Sessions | None: ...

    @property
    def keys(self) -> KeyDirectory: ...


async def session_key(portal: SessionContext, session_id: str | None) -> KeyRecord | None:
    """The key behind a session cookie, or None (unknown, revoked or expired: the
    session ends). A frozen key keeps its session, to read its account and see why;
    what spends or pays asks :func:`edge.identity.auth.require_usable` again."""
    sessions = portal.sessions
    if sessions is None:
        return None
    session = await sessions.load(session_id)
    if session is None:
        return None
    record = await portal.keys.lookup(session.prefix)
    if record is None or record.id != session.key_id \
            or not record.usable_at(time.time(), reading=True):
        await sessions.destroy(session_id)
        return None
    return record
