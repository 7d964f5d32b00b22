"""API keys: making them, hashing them, and finding them fast.

A key looks like ``sk-ip-<8 chars>_<43 chars>``. The first 14 characters are its
public prefix, stored in clear to find the record; the whole key is stored only
as HMAC-SHA256 with a server-side pepper and compared in constant time.

Lookups go: this worker's memory → the Redis mirror → SQL (only while the mirror
is incomplete, e.g. right after Redis restarted). Revocations and changes are
pushed to every worker over pub/sub; entries also expire after a TTL.

Whether a key may be used is one rule, :meth:`KeyRecord.refusal`: revoked, then
expired, then frozen (its account, by a payment dispute; a frozen key may still read
its own account, to see why). The API, the pages, chat sockets (open ones too) and
payments all ask it. What a usable key may reach is :meth:`KeyRecord.forbids`: its
scope, its models and its routes.

A rotated key has two records: its new prefix's, and its old prefix's (the old
secret's hash, with the grace period as its expiry); both carry the same key id,
limits and account.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import secrets
import string
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    from edge.db.models import Account, ApiKey
    from edge.store.hotstore import HotStore

__all__ = ["KEY_PREFIX", "ROUTES", "KeyDirectory", "KeyRecord", "KeyRefusal", "generate_key",
           "hash_key", "key_prefix"]

#: Routes a key's allow-list may name: the API's metered routes, queued jobs, chat rooms, and
#: the free ``/tokenize`` and ``/detokenize`` (``tokenize``).
ROUTES = ("chat/completions", "completions", "embeddings", "responses", "messages", "rerank",
          "score", "tokenize", "jobs", "chat")

#: Every key starts with this.
KEY_PREFIX = "sk-ip-"
#: Length of the public part of a key (``sk-ip-`` and 8 characters).
PREFIX_LENGTH = len(KEY_PREFIX) + 8
_ALPHABET = string.ascii_lowercase + string.digits


def generate_key() -> tuple[str, str]:
    """A new secret key and its public prefix."""
    prefix = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_prefix(key: str) -> str | None:
    """The public prefix of a well-formed key, or None (keys are ASCII: a header's other
    bytes arrive as surrogates, which neither Redis nor the hash can take)."""
    if len(key) < PREFIX_LENGTH + 20 or len(key) > 128 or not key.startswith(KEY_PREFIX) \
            or not key.isascii():
        return None
    return key[:PREFIX_LENGTH]


def hash_key(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


class KeyRefusal(StrEnum):
    """Why a key may not be used now; :meth:`KeyRecord.refusal` checks them in this order."""

    #: ``portal keys revoke`` or the account page's "revoke": for good.
    REVOKED = "revoked"
    #: Its ``expires_at`` has passed: for good.
    EXPIRED = "expired"
    #: A payment dispute is open: until it is won or ``portal payments unfreeze``.
    FROZEN = "frozen"

    @property
    def message(self) -> str:
        """What the key's holder is told."""
        return _REFUSAL_MESSAGES[self]


_REFUSAL_MESSAGES = {
    KeyRefusal.REVOKED: "This API key has been revoked.",
    KeyRefusal.EXPIRED: "This API key has expired.",
    KeyRefusal.FROZEN: "This API key is frozen while a payment dispute is open.",
}


@dataclasses.dataclass(slots=True, frozen=True)
class KeyRecord:
    """What the hot path needs to know about a key (never its secret)."""

    id: int
    prefix: str
    key_hash: str
    name: str
    rpm: int
    tpm: int
    revoked: bool
    frozen: bool  # its account is
    expires_at: float | None  # Unix seconds
    account_id: int = 0
    scope: str = "manage"  # manage or api (edge.db.models.KeyScope)
    models: frozenset[str] | None = None  # None: every model
    routes: frozenset[str] | None = None  # None: every route (ROUTES)
    cap: int | None = None  # micro-dollars per cap window; None: no cap
    cap_reset: str = "never"  # the window (edge.db.models.CapReset)

    def __post_init__(self) -> None:
        if not self.account_id:  # made without one: its own account, as a migrated key's
            object.__setattr__(self, "account_id", self.id)

    @property
    def manages(self) -> bool:
        """A manage key signs in to the pages, makes and revokes keys and tops up."""
        return self.scope == "manage"

    def refusal(self, now: float, *, reading: bool = False) -> KeyRefusal | None:
        """The one rule for a usable key: why it may not be used at ``now``, or None.

        Parameters:
          now: Unix seconds (``time.time()``).
          reading: the key only reads its own account (balance, usage, payments,
            the account page): a frozen key may, so that it can see why.
        """
        if self.revoked:
            return KeyRefusal.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyRefusal.EXPIRED
        if self.frozen and not reading:
            return KeyRefusal.FROZEN
        return None

    def forbids(self, *, route: str | None = None, model: str | None = None) -> str | None:
        """Why this key may not call ``route`` or ``model``, or None: the one access rule.

        Answered with 403 ``permission_denied``; ``route`` is one of :data:`ROUTES`.
        """
        if route is not None and self.routes is not None and route not in self.routes:
            return (f"This API key may not use {route}; it may use: "
                    f"{', '.join(sorted(self.routes)) or 'nothing'}.")
        if model is not None and self.models is not None and model not in self.models:
            return (f"This API key may not call the model '{model}'; it may call: "
                    f"{', '.join(sorted(self.models)) or 'none'}.")
        return None

    def usable_at(self, now: float, *, reading: bool = False) -> bool:
        """Whether :meth:`refusal` lets the key through at ``now`` (Unix seconds)."""
        return self.refusal(now, reading=reading) is None

    def to_redis(self) -> dict[FieldT, EncodableT]:
        """The record as the fields of its Redis hash (:meth:`from_redis` reads them)."""
        return {
            "id": self.id, "hash": self.key_hash, "name": self.name, "rpm": self.rpm,
            "tpm": self.tpm, "revoked": int(self.revoked), "frozen": int(self.frozen),
            "expires": "" if self.expires_at is None else repr(self.expires_at),
            "acct": self.account_id, "scope": self.scope,
            "models": _names(self.models), "routes": _names(self.routes),
            "cap": "" if self.cap is None else self.cap, "capr": self.cap_reset,
        }

    @classmethod
    def from_redis(cls, prefix: str, raw: dict[bytes, bytes]) -> KeyRecord:
        """The record from its Redis hash; a hash from before accounts is its own account."""
        expires = raw.get(b"expires", b"")
        cap = raw.get(b"cap", b"")
        return cls(
            id=int(raw[b"id"]), prefix=prefix, key_hash=raw[b"hash"].decode(),
            name=raw[b"name"].decode(), rpm=int(raw[b"rpm"]), tpm=int(raw[b"tpm"]),
            revoked=raw[b"revoked"] == b"1", frozen=raw.get(b"frozen") == b"1",
            expires_at=float(expires) if expires else None,
            account_id=int(raw.get(b"acct") or raw[b"id"]),
            scope=raw.get(b"scope", b"manage").decode(),
            models=_parse_names(raw.get(b"models", b"")),
            routes=_parse_names(raw.get(b"routes", b"")),
            cap=int(cap) if cap else None, cap_reset=raw.get(b"capr", b"never").decode(),
        )

    @classmethod
    def from_row(cls, row: ApiKey, account: Account) -> KeyRecord:
        """The record of a key's current secret (``account``: the key's)."""
        return cls(
            id=row.id, prefix=row.prefix, key_hash=row.key_hash, name=row.name, rpm=row.rpm,
            tpm=row.tpm, revoked=row.revoked_at is not None, frozen=account.frozen,
            expires_at=row.expires_at.timestamp() if row.expires_at else None,
            account_id=row.account_id, scope=str(row.scope),
            models=None if row.models is None else frozenset(row.models),
            routes=None if row.routes is None else frozenset(row.routes),
            cap=row.cap, cap_reset=str(row.cap_reset),
        )

    @classmethod
    def previous_of(cls, row: ApiKey, account: Account) -> KeyRecord | None:
        """The record of the secret a rotation replaced, while its grace period lasts."""
        if not row.previous_prefix or not row.previous_hash or row.previous_until is None:
            return None
        current = cls.from_row(row, account)
        until = row.previous_until.timestamp()
        if current.expires_at is not None:
            until = min(until, current.expires_at)
        return dataclasses.replace(current, prefix=row.previous_prefix,
                                   key_hash=row.previous_hash, expires_at=until)


def _names(names: frozenset[str] | None) -> str:
    """An allow-list as its Redis field: empty for none (every name), else a JSON list."""
    return "" if names is None else json.dumps(sorted(names))


def _parse_names(raw: bytes) -> frozenset[str] | None:
    return frozenset(json.loads(raw)) if raw else None


class KeyDirectory:
    """Finds key records by prefix for one worker, caching them in memory.

    Parameters:
      store: the Redis store whose mirror backs this cache.
      ttl: seconds a cached record (or a cached "no such key") is trusted.
    """

    #: Seconds a miss is remembered, so random keys do not hammer Redis.
    NEGATIVE_TTL = 5.0
    #: Entries kept in memory at most; the cache is cleared when full.
    MAX_ENTRIES = 100_000

    def __init__(self, store: HotStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}

    def cached(self, prefix: str) -> tuple[bool, KeyRecord | None]:
        """``(hit, record)`` from memory only; the synchronous fast path."""
        entry = self._cache.get(prefix)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    async def lookup(self, prefix: str) -> KeyRecord | None:
        """The record for ``prefix``; concurrent misses share one load."""
        hit, record = self.cached(prefix)
        if hit:
            return record
        pending = self._loading.get(prefix)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._loading[prefix] = future
        try:
            record = await self._load(prefix)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._loading.pop(prefix, None)
        future.set_result(record)
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        ttl = self.ttl if record is not None else self.NEGATIVE_TTL
        self._cache[prefix] = (time.monotonic() + ttl, record)
        return record

    def invalidate(self, prefix: str | None = None) -> None:
        """Forget one prefix, or everything (after missing pub/sub messages)."""
        if prefix is None:
            self._cache.clear()
        else:
            self._cache.pop(prefix, None)

    async def _load(self, prefix: str) -> KeyRecord | None:
        client = self.store.client
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.store.key_record(prefix))
            pipe.exists(self.store.keys_mirrored)
            raw, mirrored = await pipe.execute()
        if raw:
            return KeyRecord.from_redis(prefix, raw)
        if mirrored:
            return None
        record = await load_key_from_sql(prefix)
        if record is not None:
            await client.hset(self.store.key_record(prefix), mapping=record.to_redis())
        return record


async def load_key_from_sql(prefix: str) -> KeyRecord | None:
    """The record of ``prefix``: a key's current secret, or one a rotation replaced."""
    from tortoise.expressions import Q

    from edge.db.models import ApiKey

    row = await (ApiKey.filter(Q(prefix=prefix) | Q(previous_prefix=prefix))
                 .select_related("account").first())
    if row is None:
        return None
    if row.prefix == prefix:
        return KeyRecord.from_row(row, row.account)
    return KeyRecord.previous_of(row, row.account)


def key_records(row: ApiKey, account: Account) -> list[KeyRecord]:
    """Every record of a key: its current secret's and, during a grace period, the old one's."""
    records = [KeyRecord.from_row(row, account)]
    previous = KeyRecord.previous_of(row, account)
    if previous is not None:
        records.append(previous)
    return records


async def mirror_all_keys(store: HotStore) -> int:
    """Copy every key's records to Redis, then mark the mirror complete.

    Run at start-up by each worker; idempotent. Returns the number of keys.
    """
    from edge.db.models import ApiKey

    count = 0
    async with store.client.pipeline(transaction=False) as pipe:
        for row in await ApiKey.all().select_related("account"):
            for record in key_records(row, row.account):
                pipe.hset(store.key_record(record.prefix), mapping=record.to_redis())
            count += 1
        pipe.set(store.keys_mirrored, datetime.now(UTC).isoformat())
        await pipe.execute()
    return count


async def publish_key(store: HotStore, row: ApiKey, account: Account | None = None) -> None:
    """Write one key's records to the mirror and tell every worker to reload them.

    Workers drop the key from their cache and close its open chat sockets if the
    key is no longer usable (:class:`edge.chat.guard.KeyGuard`). A secret a rotation
    replaced loses its record once its grace period is over.
    """
    from edge.db.models import Account
    from edge.store.keys import key_event

    if account is None:
        account = await Account.get(id=row.account_id)
    records = key_records(row, account)
    async with store.client.pipeline(transaction=False) as pipe:
        for record in records:
            pipe.hset(store.key_record(record.prefix), mapping=record.to_redis())
        if row.previous_prefix and len(records) == 1:
            pipe.delete(store.key_record(row.previous_prefix))
        await pipe.execute()
    for record in records:
        await store.publish(key_event(record.prefix))
    if row.previous_prefix and len(records) == 1:
        await store.publish(key_event(row.previous_prefix))


async def publish_account(store: HotStore, account: Account) -> None:
    """Publish every key of ``account`` (its freeze is in each key's record)."""
    from edge.db.models import ApiKey

    for row in await ApiKey.filter(account_id=account.id):
        await publish_key(store, row, account)
