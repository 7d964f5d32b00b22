"""Who is calling: the API key in ``Authorization: Bearer``, checked in constant time."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from edge.errors import APIError, InvalidAPIKey, PermissionDenied
from edge.identity.keys import KeyRefusal, hash_key, key_prefix

if TYPE_CHECKING:
    from edge.identity.keys import KeyDirectory, KeyRecord

__all__ = ["KeyContext", "authenticate", "bearer_token", "check_key", "credentials",
           "refusal_error",
           "require_access", "require_manager", "require_usable", "same_secret"]


class KeyContext(Protocol):
    """What checking a key needs: a worker's ``PortalContext`` has both."""

    @property
    def keys(self) -> KeyDirectory: ...

    @property
    def pepper(self) -> bytes: ...


def same_secret(given: str, expected: str) -> bool:
    """Compare in constant time; a header's undecodable bytes (surrogates) just differ."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def credentials(headers: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header, or the key Anthropic's clients send in ``x-api-key``
    (as a Bearer header): one key, whichever SDK calls."""
    header = headers.get("authorization")
    if header is None:
        key = headers.get("x-api-key")
        if key is not None:
            return "Bearer " + key
    return header


def bearer_token(header: str | None) -> str:
    if not header:
        raise InvalidAPIKey("You didn't provide an API key. Send it as "
                            "'Authorization: Bearer <key>' (or 'x-api-key: <key>').")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidAPIKey("The Authorization header must be 'Bearer <key>'.")
    return token.strip()


def refusal_error(refusal: KeyRefusal) -> APIError:
    """The API's answer to a refused key: 401 revoked or expired, 403 frozen."""
    if refusal is KeyRefusal.FROZEN:
        return PermissionDenied(refusal.message)
    return InvalidAPIKey(refusal.message, code="invalid_api_key")


def require_usable(record: KeyRecord, *, reading: bool = False) -> KeyRecord:
    """``record`` if :meth:`~edge.identity.keys.KeyRecord.refusal` lets it through now.

    Raises:
      InvalidAPIKey: revoked or expired.
      PermissionDenied: frozen (unless ``reading``).
    """
    refusal = record.refusal(time.time(), reading=reading)
    if refusal is not None:
        raise refusal_error(refusal)
    return record


def require_access(record: KeyRecord, *, route: str | None = None,
                   model: str | None = None) -> KeyRecord:
    """``record`` if its models and routes allow ``route`` and ``model``.

    Raises:
      PermissionDenied: they do not (403 ``permission_denied``).
    """
    refused = record.forbids(route=route, model=model)
    if refused is not None:
        raise PermissionDenied(refused, param="model" if route is None else None)
    return record


def require_manager(record: KeyRecord) -> KeyRecord:
    """``record`` if it is a manage key: one that may manage keys and top up.

    Raises:
      PermissionDenied: an API key.
    """
    if not record.manages:
        raise PermissionDenied("This is an API key: managing keys, top-ups and the pages "
                               "need a manage key of the account.")
    return record


async def authenticate(portal: KeyContext, header: str | None, *,
                       reading: bool = False) -> KeyRecord:
    """The usable key record behind an Authorization header.

    Parameters:
      reading: the caller only reads the key's own account; a frozen key may.

    Raises:
      InvalidAPIKey: missing, malformed, unknown, revoked or expired.
      PermissionDenied: the key is frozen (a payment is disputed), unless ``reading``.
    """
    return await check_key(portal, bearer_token(header), reading=reading)


async def check_key(portal: KeyContext, key: str, *, reading: bool = False) -> KeyRecord:
    """The usable record of the secret ``key`` (see :func:`authenticate`)."""
    prefix = key_prefix(key)
    if prefix is None:
        raise InvalidAPIKey("Incorrect API key provided.")
    hit, record = portal.keys.cached(prefix)
    if not hit:
        record = await portal.keys.lookup(prefix)
    # Compare even when the prefix is unknown, so timing says nothing about it.
    expected = record.key_hash if record is not None else "0" * 64
    if not hmac.compare_digest(expected, hash_key(key, portal.pepper)) or record is None:
        raise InvalidAPIKey("Incorrect API key provided.")
    return require_usable(record, reading=reading)
