"""Reading a request body that must be a JSON object, with OpenAI-shaped refusals."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from edge.errors import InvalidRequest

__all__ = ["json_object", "loads"]

#: An escape of a UTF-16 surrogate (D800 to DFFF): half of a pair, or a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    """A number literal as a float, refusing one too large for it (``1e999``)."""
    value = float(text)
    if math.isinf(value):  # would go on to a node as the invalid literal Infinity
        raise ValueError(f"the number {text[:40]} is beyond the range of a 64-bit float "
                         "(about ±1.8e308)")
    return value


def loads(raw: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` that refuses what is not text or not a number.

    Lone UTF-16 surrogates such as ``"\\ud800"``: JSON allows them, but they are
    not text: they cannot be encoded to store, hash or send, and would fail deep
    inside whatever touched them first.

    ``NaN``, ``Infinity``, and numbers beyond a float's range such as ``1e999``
    (which Python reads as infinity): none is JSON, and once parsed they would be
    sent on as the literal ``Infinity``, which no JSON parser takes.

    Bytes must be UTF-8 (RFC 8259): ``json.loads`` would also take UTF-16 and
    UTF-8-encoded surrogates.

    Raises:
      ValueError: not UTF-8, not JSON, a lone surrogate, or not a finite number.
    """
    text = raw.decode("utf-8-sig") if isinstance(raw, bytes | bytearray) else raw
    kwargs.setdefault("parse_constant", _no_constant)
    kwargs.setdefault("parse_float", _finite)
    value = json.loads(text, **kwargs)
    if _SURROGATE_ESCAPE.search(text):  # rare; pairs (escaped emoji) pass the check below
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                             "which is not text") from None
    return value


def json_object(raw: bytes | None, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a dict.

    Parameters:
      raw: the request body.
      empty_ok: an empty body means ``{}`` instead of an error.

    Raises:
      InvalidRequest: not JSON (see :func:`loads`), too deeply nested, or not an object.
    """
    if not raw and empty_ok:
        return {}
    try:
        body = loads(raw or b"")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body
