"""Accounts and their keys: the operations behind the CLI, the admin API and the pages.

An account owns the balance; its keys spend it, each within its own scope, models,
routes, rate limits, expiry and credit cap. The first key of an account is a manage
key. Every change is checked whole by :class:`KeySettings` before anything is
written (a bad value is a :class:`KeySettingsError` naming it, and nothing changes),
then published to every worker (:func:`edge.identity.keys.publish_key`).

Each operation takes an optional :class:`~edge.store.hotstore.HotStore`. With one,
changes reach running workers at once. Without one (no Redis runs, only possible with
the embedded server), they go straight to SQL, which is then the whole truth.
Crediting an account is :func:`edge.billing.credits.credit`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tortoise.expressions import Q
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from edge.db.models import (
    LLM,
    MAX_ID,
    Account,
    ApiKey,
    CapReset,
    KeyScope,
    LedgerEntry,
    LedgerKind,
)
from edge.identity.keys import ROUTES, generate_key, hash_key, publish_account, publish_key

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["MAX_CAP", "MAX_GRACE", "MAX_RPM", "MAX_TPM", "CreatedKey", "KeySettings",
           "KeySettingsError", "create_key", "matching_accounts", "revoke_key", "rotate_key",
           "set_frozen", "update_key"]

#: The longest account search, in characters.
SEARCH_LENGTH = 128

#: Largest limits a key may be given: beyond them a number is a typo, not a plan.
MAX_RPM = 1_000_000_000
MAX_TPM = 1_000_000_000_000
#: Largest credit cap, micro-dollars (one million dollars).
MAX_CAP = 10**12
#: Longest grace period of a rotated key's old secret, seconds (30 days).
MAX_GRACE = 30 * 86400


class KeySettingsError(ValueError):
    """A key setting that cannot be applied; ``param`` names it (``models``, ``cap``, …)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclasses.dataclass(frozen=True)
class CreatedKey:
    row: ApiKey
    account: Account
    secret: str  # shown once, never stored


_UNSET: Any = object()


@dataclasses.dataclass
class KeySettings:
    """What a key may do, as asked; :meth:`check` validates it against the account.

    A field left :data:`_UNSET` (the default) is not changed by :func:`update_key`.
    ``models`` and ``routes``: None allows all; ``cap`` None means no cap.
    """

    name: str = _UNSET
    scope: str = _UNSET
    models: list[str] | None = _UNSET
    routes: list[str] | None = _UNSET
    rpm: int = _UNSET
    tpm: int = _UNSET
    cap: int | None = _UNSET
    cap_reset: str = _UNSET
    expires_at: datetime | None = _UNSET

    def given(self) -> dict[str, Any]:
        """The fields that were set, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not _UNSET}

    async def check(self, account: Account, *, balance: int) -> dict[str, Any]:
        """The given fields, normalised, or :class:`KeySettingsError` for the first bad one.

        ``balance``: the account's live balance, micro-dollars (a cap may not exceed it).
        """
        changes = self.given()
        if "name" in changes:
            name = str(changes["name"]).strip()
            if not name or len(name) > 128:
                raise KeySettingsError("A key's name is 1 to 128 characters.", "name")
            changes["name"] = name
        if "scope" in changes:
            try:
                changes["scope"] = KeyScope(changes["scope"])
            except ValueError:
                raise KeySettingsError("scope is 'manage' or 'api'.", "scope") from None
        if changes.get("models") is not None:
            changes["models"] = await _known_models(changes["models"])
        if changes.get("routes") is not None:
            routes = sorted({str(r).strip() for r in changes["routes"] if str(r).strip()})
            unknown = [r for r in routes if r not in ROUTES]
            if unknown or not routes:
                raise KeySettingsError(
                    f"Unknown route(s): {', '.join(unknown) or '(none given)'}; routes are "
                    f"{', '.join(ROUTES)}.", "routes")
            changes["routes"] = routes
        for field, most in (("rpm", MAX_RPM), ("tpm", MAX_TPM)):
            if field in changes:
                value = changes[field]
                if isinstance(value, bool) or not isinstance(value, int) or not \
                        1 <= value <= most:
                    raise KeySettingsError(f"{field} is a whole number from 1 to {most:,}.",
                                           field)
        if "cap_reset" in changes:
            try:
                changes["cap_reset"] = CapReset(changes["cap_reset"])
            except ValueError:
                raise KeySettingsError("cap_reset is daily, weekly, monthly or never.",
                                       "cap_reset") from None
        if changes.get("cap") is not None:
            cap = changes["cap"]
            if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= MAX_CAP:
                raise KeySettingsError("cap is an amount from 0 to 1,000,000 USD.", "cap")
            if cap > balance:
                raise KeySettingsError(
                    f"A cap of {cap / 1e6:.6f} USD is above the account's balance of "
                    f"{balance / 1e6:.6f} USD; top up first, or set a lower cap.", "cap")
        if changes.get("expires_at") is not None:
            expires = changes["expires_at"]
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if expires <= datetime.now(UTC):
                raise KeySettingsError("expires_at is in the past.", "expires_at")
            changes["expires_at"] = expires
        return changes


async def _known_models(names: list[str]) -> list[str]:
    wanted = sorted({str(n).strip() for n in names if str(n).strip()})
    if not wanted:
        raise KeySettingsError("models lists no model; leave it out to allow every model.",
                               "models")
    known = {str(n) for n in await LLM.filter(name__in=wanted).values_list("name", flat=True)}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise KeySettingsError(f"Unknown model(s): {', '.join(unknown)}.", "models")
    return wanted


async def _live_balance(account: Account, store: HotStore | None) -> int:
    """The account's balance now: Redis's live one (less open reservations), else SQL's."""
    if store is not None:
        raw = await store.client.get(store.balance(account.id))
        if raw is not None:
            return int(raw)
    return int(account.balance)


async def _new_secret() -> tuple[str, str]:
    for _attempt in range(5):
        secret, prefix = generate_key()
        if not await ApiKey.exists(prefix=prefix) and \
                not await ApiKey.exists(previous_prefix=prefix):
            return secret, prefix
    # five prefixes taken in a row: the generator is broken, not unlucky
    raise RuntimeError("no free key prefix after 5 tries")


async def create_key(*, name: str, pepper: bytes, rpm: int, tpm: int, credit: int = 0,
                     expires_at: datetime | None = None, store: HotStore | None = None,
                     account: Account | None = None, settings: KeySettings | None = None,
                     max_keys: int | None = None) -> CreatedKey:
    """Make a key: of ``account``, or the first (manage) key of a new account.

    A new account opens with ``credit`` micro-dollars (its first ledger row); a key
    of an existing account cannot bring credit. ``settings`` gives the key's scope,
    models, routes and cap; ``max_keys`` bounds the account's unrevoked keys.

    Raises:
      KeySettingsError: a setting is bad, or the account has ``max_keys`` keys already.
    """
    if credit < 0:
        raise KeySettingsError("the opening credit cannot be negative", "credit")
    if account is not None and credit:
        raise KeySettingsError("a key of an existing account brings no credit: top up the "
                               "account instead", "credit")
    settings = settings or KeySettings()
    given = settings.given()
    defaults: dict[str, Any] = {"name": name, "rpm": rpm, "tpm": tpm, "expires_at": expires_at}
    # What ``settings`` gives wins over the arguments.
    asked = dataclasses.replace(settings, **{f: v for f, v in defaults.items() if f not in given})
    if account is None:
        balance = credit
        if asked.scope not in (_UNSET, KeyScope.MANAGE, "manage"):
            raise KeySettingsError("The first key of an account is a manage key.", "scope")
        asked.scope = KeyScope.MANAGE
    else:
        balance = await _live_balance(account, store)
        if max_keys is not None and await ApiKey.filter(
                account_id=account.id, revoked_at__isnull=True).count() >= max_keys:
            raise KeySettingsError(f"An account has at most {max_keys} keys; revoke one first.",
                                   "account")
    changes = await asked.check(account or Account(balance=balance), balance=balance)
    changes.setdefault("scope", KeyScope.API)
    secret, prefix = await _new_secret()
    async with in_transaction():
        if account is None:
            account = await Account.create(name=changes["name"], balance=credit)
            if credit:
                await LedgerEntry.create(account=account, kind=LedgerKind.TOPUP, amount=credit,
                                         reference=f"opening:{prefix}", note="opening credit")
        row = await ApiKey.create(account=account, prefix=prefix,
                                  key_hash=hash_key(secret, pepper), **changes)
    if store is not None:
        await publish_key(store, row, account)
    return CreatedKey(row, account, secret)


async def update_key(key: ApiKey, settings: KeySettings, *,
                     store: HotStore | None = None) -> ApiKey:
    """Change a key's name, scope, models, routes, limits, cap or expiry; all or nothing.

    Every worker applies the change within a second (the key's event). A manage key
    stays the account's last manage key: it cannot be made an API key then.

    Raises:
      KeySettingsError: a setting is bad, or the key is revoked (nothing changed).
    """
    if key.revoked_at is not None:
        raise KeySettingsError("A revoked key cannot be changed.", "key")
    account = await Account.get(id=key.account_id)
    balance = await _live_balance(account, store)
    changes = await settings.check(account, balance=balance)
    if changes.get("scope") == KeyScope.API and key.scope == KeyScope.MANAGE and \
            not await ApiKey.filter(account_id=account.id, scope=KeyScope.MANAGE,
                                    revoked_at__isnull=True).exclude(id=key.id).exists():
        raise KeySettingsError("This is the account's only manage key; make another manage "
                               "key before turning this one into an API key.", "scope")
    window_changed = ("cap_reset" in changes and changes["cap_reset"] != key.cap_reset) or \
        (changes.get("cap") is not None and key.cap is None)
    if changes:
        for field, value in changes.items():
            setattr(key, field, value)
        await key.save(update_fields=list(changes))
    if store is not None:
        if window_changed:
            # What Redis counted was for another window, or stopped while uncapped: the
            # next reservation reloads the window from SQL (edge.billing.caps).
            await store.client.delete(store.cap(key.id))
        await publish_key(store, key, account)
    return key


async def rotate_key(key: ApiKey, *, pepper: bytes, grace: float = 0,
                     store: HotStore | None = None) -> CreatedKey:
    """Give a key a new secret (shown once); the old one works ``grace`` more seconds.

    The key keeps its id, limits, cap and history. A secret replaced before it is
    rotated again stops at once: only the last one has a grace period.

    Raises:
      KeySettingsError: ``grace`` is negative or above :data:`MAX_GRACE`, or the key
        is revoked.
    """
    if not 0 <= grace <= MAX_GRACE:
        raise KeySettingsError(f"grace is 0 to {MAX_GRACE} seconds.", "grace")
    if key.revoked_at is not None:
        raise KeySettingsError("A revoked key cannot be rotated.", "key")
    account = await Account.get(id=key.account_id)
    secret, prefix = await _new_secret()
    stale, replaced = key.previous_prefix, key.prefix
    if grace:
        key.previous_prefix, key.previous_hash = key.prefix, key.key_hash
        key.previous_until = datetime.now(UTC) + timedelta(seconds=grace)
    else:
        key.previous_prefix = key.previous_hash = key.previous_until = None
    key.prefix, key.key_hash = prefix, hash_key(secret, pepper)
    await key.save(update_fields=["prefix", "key_hash", "previous_prefix", "previous_hash",
                                  "previous_until"])
    if store is not None:
        await publish_key(store, key, account)
        from edge.store.keys import key_event

        # The secret before the replaced one goes, and the replaced one too without grace.
        for gone in {stale, None if grace else replaced} - {None, key.previous_prefix}:
            assert gone is not None
            await store.client.delete(store.key_record(gone))
            await store.publish(key_event(gone))
    return CreatedKey(key, account, secret)


async def revoke_key(key: ApiKey, *, store: HotStore | None = None) -> None:
    """Refuse the key (and a rotated-out secret of it) from now on; every worker hears of
    it within a second, and closes the key's open chat sockets."""
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await key.save(update_fields=["revoked_at"])
    if store is not None:
        await publish_key(store, key)


async def set_frozen(account_id: int, frozen: bool, store: HotStore | None) -> None:
    """Freeze or unfreeze an account's keys; every worker hears of it within a second."""
    account = await Account.get(id=account_id)
    if account.frozen != frozen:
        account.frozen = frozen
        await account.save(update_fields=["frozen"])
    if store is not None:
        await publish_account(store, account)


async def matching_accounts(search: str) -> QuerySet[Account]:
    """The accounts a search names, by id: a part of the account's name, its id, or the
    start of one of its keys' prefixes (every account for an empty search), as
    ``GET /admin/accounts?q=`` and the console's accounts page find them.

    A search that is not printable text matches nothing: it names no account, and
    PostgreSQL refuses a NUL in a string.
    """
    query = Account.all().order_by("id")
    search = search.strip()[:SEARCH_LENGTH]
    if not search:
        return query
    if not search.isprintable():
        return query.filter(id__in=[])
    matches = Q(name__icontains=search)
    if search.isascii() and search.isdigit() and int(search) <= MAX_ID:
        matches |= Q(id=int(search))
    owners = await ApiKey.filter(prefix__startswith=search).values_list("account_id", flat=True)
    if owners:
        matches |= Q(id__in=list(owners))
    return query.filter(matches)
