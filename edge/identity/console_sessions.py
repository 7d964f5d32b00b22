"""The operator console's sessions: opened with the admin token, kept in Redis, ended
by an idle timeout.

They are not the customers' sessions (:mod:`edge.identity.sessions`): their own
cookie (``path=/admin``, ``SameSite=Strict``), their own Redis keys, a life of
``PORTAL_CONSOLE_IDLE`` seconds without use and ``PORTAL_CONSOLE_LIFETIME`` at most.
Redis keeps the SHA-256 of the cookie's id, the session's CSRF token, when it opened
and a fingerprint of the admin token it was opened with: changing
``PORTAL_ADMIN_TOKEN`` ends every console session at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from typing import TYPE_CHECKING

from edge.identity.auth import same_secret
from edge.identity.sessions import well_formed
from edge.store import keys as redis_keys
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["COOKIE", "ConsoleSession", "ConsoleSessions"]

#: Name of the console's session cookie (sent to ``/admin`` paths only).
COOKIE = "portal_console"


def _fingerprint(admin_token: str) -> str:
    return hashlib.sha256(b"console:" + admin_token.encode("utf-8", "surrogateescape")
                          ).hexdigest()


@dataclasses.dataclass(frozen=True)
class ConsoleSession:
    id: str
    #: The token every form and every state-changing call of the session must echo.
    csrf: str
    #: Unix time it was opened.
    opened_at: float


class ConsoleSessions:
    """Open, find and close console sessions.

    Parameters:
      store: the hot store.
      idle: seconds a session lasts without use.
      lifetime: seconds a session lasts at most.
    """

    def __init__(self, store: HotStore, *, idle: int, lifetime: int) -> None:
        self.store = store
        self.idle = idle
        self.lifetime = lifetime

    def _key(self, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return redis_keys.console_session(self.store.ns, digest)

    async def open(self, admin_token: str) -> ConsoleSession:
        """A new session for whoever just gave ``admin_token`` (checked by the caller)."""
        session = ConsoleSession(secrets.token_urlsafe(32), secrets.token_urlsafe(24),
                                 time.time())
        key = self._key(session.id)
        async with self.store.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"csrf": session.csrf, "opened": repr(session.opened_at),
                                    "token": _fingerprint(admin_token)})
            pipe.expire(key, self.idle)
            await pipe.execute()
        return session

    async def load(self, session_id: str | None, admin_token: str) -> ConsoleSession | None:
        """The live session behind a cookie, its idle clock restarted; None when it is
        unknown, idle too long, too old, or opened with another admin token."""
        if not admin_token or not well_formed(session_id):
            return None
        key = self._key(session_id)
        raw = await self.store.client.hgetall(key)
        if not raw:
            return None
        opened = float(text(raw.get(b"opened", b"0")))
        if time.time() - opened > self.lifetime or not same_secret(
                text(raw.get(b"token", b"")), _fingerprint(admin_token)):
            await self.store.client.delete(key)
            return None
        await self.store.client.expire(key, self.idle)
        return ConsoleSession(session_id, text(raw[b"csrf"]), opened)

    async def close(self, session_id: str | None) -> None:
        if well_formed(session_id):
            await self.store.client.delete(self._key(session_id))
