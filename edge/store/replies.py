"""Redis replies as Python values.

The clients are made without ``decode_responses`` (:func:`edge.store.hotstore.connect_redis`),
so a reply holds bytes; redis-py types such replies ``bytes | str`` (or wider, for
commands whose reply changes shape with their options).
"""

from __future__ import annotations

__all__ = ["text"]


def text(raw: object) -> str:
    """A reply (or one element of it) as text: bytes decoded as UTF-8, a str as it is.

    Raises:
      TypeError: ``raw`` is neither (a missing value, ``None``, included: write
        ``text(reply or b"")`` where a missing value means the empty string).
    """
    if isinstance(raw, bytes):
        return raw.decode()
    if isinstance(raw, str):
        return raw
    raise TypeError(f"expected a text reply from Redis, got {type(raw).__name__}")
