"""Reading the operator's input: a body's amounts of USD and a query's filters.

Each reader answers the value, or raises :class:`edge.errors.InvalidRequest` naming the
field (a 400 in OpenAI's shape) before anything changes. Shared by the admin routes
(``/admin/accounts``, ``/admin/models``, ``/admin/ledger``, ``/admin/payments``).
"""

from __future__ import annotations

from typing import Any

from sanic import Request

from edge.billing.money import parse_usd
from edge.db.models import MAX_ID
from edge.errors import InvalidRequest

__all__ = ["query_id", "query_limit", "query_text", "usd"]


def usd(value: Any, field: str, *, most: int | None = None, positive: bool = False) -> int:
    """An amount of USD (a string or a number, ``"2.50"``) as micro-dollars.

    Parameters:
      value: the body's value.
      field: its name, for the error.
      most: the largest amount allowed, micro-dollars (None: no bound but the money's).
      positive: refuse zero as well as negative amounts.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequest(f"'{field}' is an amount of USD.", param=field)
    try:
        micros = parse_usd(value)
    except ValueError as exc:
        raise InvalidRequest(f"'{field}': {exc}", param=field) from None
    if micros < 0:
        raise InvalidRequest(f"'{field}' cannot be negative.", param=field)
    if positive and micros == 0:
        raise InvalidRequest(f"'{field}' must be more than 0.", param=field)
    if most is not None and micros > most:
        raise InvalidRequest(f"'{field}' is at most {most / 1e6:,.6f} USD.", param=field)
    return micros


def query_limit(request: Request, *, default: int = 100, most: int = 500) -> int:
    """The ``limit`` query argument: a whole number from 1 to ``most``."""
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) < 7) or not 1 <= int(raw) <= most:
        raise InvalidRequest(f"'limit' must be from 1 to {most}.", param="limit")
    return int(raw)


def query_id(request: Request, name: str) -> int | None:
    """A query argument that is a row's id (None when absent)."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) < 20) or not 0 < int(raw) <= MAX_ID:
        raise InvalidRequest(f"'{name}' must be an id (a positive whole number).", param=name)
    return int(raw)


def query_text(request: Request, name: str, longest: int) -> str | None:
    """A query argument of at most ``longest`` printable characters (None when absent or
    empty)."""
    raw: str | None = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > longest or not raw.isprintable():
        raise InvalidRequest(f"'{name}' is at most {longest} printable characters.",
                             param=name)
    return raw
