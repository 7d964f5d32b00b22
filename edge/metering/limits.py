"""The ``x-ratelimit-*`` headers of a metered answer, as OpenAI sends them.

From the key's two per-minute buckets right after its reservation (``reserve.lua``):
the limit, what is left, and how long until the bucket is full again (``"20ms"``,
``"1.5s"``, ``"6m0s"``). SDKs and client libraries pace themselves by them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.billing.reservations import Reservation

__all__ = ["duration", "rate_limit_headers"]


def duration(seconds: float) -> str:
    """A span in OpenAI's notation: ``"250ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def rate_limit_headers(reservation: Reservation) -> dict[str, str]:
    """The six headers for ``reservation``'s key, or none when its buckets are not known."""
    requests, tokens = reservation.requests_left, reservation.tokens_left
    if requests is None or tokens is None:
        return {}
    key = reservation.key
    headers: dict[str, str] = {}
    for what, limit, left in (("requests", key.rpm, requests), ("tokens", key.tpm, tokens)):
        left = max(0, min(limit, left))
        headers[f"x-ratelimit-limit-{what}"] = str(limit)
        headers[f"x-ratelimit-remaining-{what}"] = str(left)
        headers[f"x-ratelimit-reset-{what}"] = duration((limit - left) * 60 / limit)
    return headers
