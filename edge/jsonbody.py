"""Reading a request body that must be a JSON object, with OpenAI-shaped refusals."""

from __future__ import annotations

import json
from typing import Any

from edge.errors import InvalidRequest

__all__ = ["json_object"]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def json_object(raw: bytes | None, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a dict.

    Parameters:
      raw: the request body.
      empty_ok: an empty body means ``{}`` instead of an error.

    Raises:
      InvalidRequest: not JSON, too deeply nested, or not an object.
    """
    if not raw and empty_ok:
        return {}
    try:
        body = json.loads(raw or b"", parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body
