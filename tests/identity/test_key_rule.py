"""The one rule for a usable key, and what the API answers for each refusal."""

from __future__ import annotations

import dataclasses

import pytest

from edge.errors import InvalidAPIKey, PermissionDenied
from edge.identity.auth import refusal_error, require_usable
from edge.identity.keys import KeyRecord, KeyRefusal

NOW = 1_700_000_000.0
KEY = KeyRecord(id=1, prefix="sk-ip-abcdefgh", key_hash="0" * 64, name="k", rpm=1, tpm=1,
                revoked=False, frozen=False, expires_at=None)


@pytest.mark.parametrize(("changes", "refusal", "reading"), [
    ({}, None, None),
    ({"expires_at": NOW + 1}, None, None),
    ({"expires_at": NOW}, KeyRefusal.EXPIRED, KeyRefusal.EXPIRED),
    ({"revoked": True}, KeyRefusal.REVOKED, KeyRefusal.REVOKED),
    ({"frozen": True}, KeyRefusal.FROZEN, None),  # a frozen key may read its account
    ({"frozen": True, "revoked": True, "expires_at": NOW - 1}, KeyRefusal.REVOKED,
     KeyRefusal.REVOKED),
    ({"frozen": True, "expires_at": NOW - 1}, KeyRefusal.EXPIRED, KeyRefusal.EXPIRED),
])
def test_refusals_in_order(changes: dict, refusal: KeyRefusal | None,
                           reading: KeyRefusal | None) -> None:
    record = dataclasses.replace(KEY, **changes)
    assert record.refusal(NOW) is refusal
    assert record.refusal(NOW, reading=True) is reading
    assert record.usable_at(NOW) is (refusal is None)


def test_the_api_answers_401_or_403() -> None:
    assert isinstance(refusal_error(KeyRefusal.REVOKED), InvalidAPIKey)
    assert isinstance(refusal_error(KeyRefusal.EXPIRED), InvalidAPIKey)
    frozen = refusal_error(KeyRefusal.FROZEN)
    assert isinstance(frozen, PermissionDenied) and "dispute" in frozen.message
    assert require_usable(KEY) is KEY
    with pytest.raises(PermissionDenied):
        require_usable(dataclasses.replace(KEY, frozen=True))
    assert require_usable(dataclasses.replace(KEY, frozen=True), reading=True).frozen
