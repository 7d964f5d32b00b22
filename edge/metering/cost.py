"""The cost in the answer body, as OpenRouter gives it: ``usage.cost`` in USD.

SDK users then see what a call cost without reading raw headers. The cost is put
into the node's own bytes, not re-serialised: the last ``"usage":{`` of a JSON body
(or of a stream's final usage chunk) gets ``"cost":<USD>,`` as its first member. A
quote inside a JSON string is always escaped, so the pattern can only match the key.
"""

from __future__ import annotations

from edge.billing.money import format_usd

__all__ = ["with_cost"]

_USAGE = b'"usage":'


def with_cost(body: bytes, micros: int) -> bytes:
    """``body`` with ``usage.cost`` (USD) set to ``micros``; unchanged without a usage object."""
    at = body.rfind(_USAGE)
    if at == -1:
        return body
    start = at + len(_USAGE)
    while start < len(body) and body[start] in b" \t\r\n":
        start += 1
    if start >= len(body) or body[start] != ord("{"):
        return body  # "usage": null
    empty = body[start + 1:].lstrip()[:1] == b"}"
    cost = b'"cost":' + format_usd(micros).encode() + (b"" if empty else b",")
    return body[:start + 1] + cost + body[start + 1:]
