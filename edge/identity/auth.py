"""Who is calling: the API key in ``Authorization: Bearer``, checked in constant time."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from edge.errors import InvalidAPIKey, PermissionDenied
from edge.identity.keys import hash_key, key_prefix

if TYPE_CHECKING:
    from edge.context import PortalContext
    from edge.identity.keys import KeyRecord

__all__ = ["authenticate", "bearer_token", "same_secret"]


def same_secret(given: str, expected: str) -> bool:
    """Compare in constant time; a header's undecodable bytes (surrogates) just differ."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def bearer_token(header: str | None) -> str:
    if not header:
        raise InvalidAPIKey("You didn't provide an API key. Send it as "
                            "'Authorization: Bearer <key>'.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidAPIKey("The Authorization header must be 'Bearer <key>'.")
    return token.strip()


async def authenticate(portal: PortalContext, header: str | None) -> KeyRecord:
    """The usable key record behind an Authorization header.

    Raises:
      InvalidAPIKey: missing, malformed, unknown, revoked or expired.
      PermissionDenied: the key is frozen (a payment is disputed).
    """
    return await check_key(portal, bearer_token(header))


async def check_key(portal: PortalContext, key: str) -> KeyRecord:
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
    if not record.usable(time.time()):
        raise InvalidAPIKey("This API key has been revoked or has expired.",
                            code="invalid_api_key")
    if record.frozen:
        raise PermissionDenied("This API key is frozen while a payment dispute is open.")
    return record
