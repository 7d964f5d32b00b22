"""``/v1/usage``, ``/v1/usage/export`` and ``/v1/generations/<id>``: what the calls cost.

A manage key sees its whole account, an API key only its own calls (:class:`UsageScope`).
A key id outside the caller's scope is a 404, like a key that does not exist, so that
nothing says whether another account's key or request exists.

Time is UTC and ranges are half-open, ``[start, end)``: ``start`` and ``end`` are
``YYYY-MM-DD`` (midnight) or ISO datetimes (naive means UTC), at most
:data:`MAX_RANGE_DAYS` apart; by default the last 30 days. Rows come newest first
(highest id first) and are paged by an opaque cursor; groups are summed by SQL.

The functions below the routes' parsing (:func:`parse_range`, :func:`usage_rows`,
:func:`usage_groups`, :func:`spend_by_day_and_model`, :func:`csv_chunks`) are what the
pages call with a session's key; they raise :class:`~edge.errors.InvalidRequest` (400)
and :class:`~edge.errors.NotFound` (404) like the routes.
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pypika_tortoise.terms import Function as SqlFunction
from sanic import Blueprint, HTTPResponse, Request, json
from tortoise.expressions import Function
from tortoise.functions import Count, Sum

from edge.api.shapes import money
from edge.db.models import ApiKey, UsageRecord
from edge.errors import InvalidRequest, NotFound
from edge.identity.auth import authenticate, credentials

if TYPE_CHECKING:
    from pypika_tortoise import SqlContext
    from tortoise.queryset import QuerySet

    from edge.identity.keys import KeyRecord

__all__ = ["CSV_COLUMNS", "GROUPS", "MAX_LIMIT", "MAX_RANGE_DAYS", "UsageScope", "bp",
           "csv_chunks", "parse_range", "send_csv", "spend_by_day_and_model", "usage_groups",
           "usage_rows"]

bp = Blueprint("usage", url_prefix="/v1")

#: Longest range one query may cover, days (a leap year).
MAX_RANGE_DAYS = 366
#: Most rows one page of ``/v1/usage`` holds.
MAX_LIMIT = 1000
#: What ``group_by`` may name.
GROUPS = ("day", "model", "key")
#: The export's header row, in column order.
CSV_COLUMNS = ("request_id", "created_at", "key_id", "model", "node_id", "endpoint",
               "prompt_tokens", "completion_tokens", "cost_usd", "cost_micros", "latency_ms",
               "status", "streamed", "cancelled")
#: Rows read per query while exporting.
_EXPORT_BATCH = 500
#: Largest ids the columns hold: ``api_keys.id`` is an INTEGER, ``usage_log.id`` a BIGINT.
_MAX_KEY_ID = 2**31 - 1
_MAX_ROW_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_CURSOR = re.compile(r"u1:([0-9]{1,19})")
_FIELDS = ("id", "request_id", "created_at", "model", "node_id", "key_id", "endpoint",
           "prompt_tokens", "completion_tokens", "cost", "latency_ms", "status", "streamed",
           "cancelled", "counted_by")
#: A CSV cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclasses.dataclass(frozen=True)
class UsageScope:
    """Whose usage a caller may see."""

    account_id: int
    key_id: int | None  # None: the whole account

    @classmethod
    def of(cls, key: KeyRecord) -> UsageScope:
        """A manage key sees its whole account; an API key only itself."""
        return cls(account_id=key.account_id, key_id=None if key.manages else key.id)


# -- parsing ------------------------------------------------------------------------------
def _instant(text: str, param: str) -> datetime:
    """``YYYY-MM-DD`` (midnight) or an ISO datetime, as an aware UTC datetime."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        if len(text) > 40:
            raise ValueError(text)
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{param} is a date (YYYY-MM-DD) or an ISO 8601 datetime, in "
                             "UTC unless it says otherwise.", param=param) from None


def parse_range(start: str | None, end: str | None, *,
                default_days: int = 30) -> tuple[datetime, datetime]:
    """The UTC range ``[start, end)`` asked for; by default the last ``default_days`` days.

    Only ``start``: until now. Only ``end``: the ``default_days`` before it.

    Raises:
      InvalidRequest: a value is not a date, ``start`` is not before ``end``, or they are
        more than :data:`MAX_RANGE_DAYS` apart (``param`` names the culprit).
    """
    until = _instant(end, "end") if end else datetime.now(UTC)
    try:
        since = _instant(start, "start") if start else until - timedelta(days=default_days)
    except OverflowError:
        raise InvalidRequest("end is too early.", param="end") from None
    if since >= until:
        raise InvalidRequest("start must be before end.", param="start")
    if until - since > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidRequest(f"A range covers at most {MAX_RANGE_DAYS} days.", param="end")
    return since, until


def _number(text: str | None, param: str, *, low: int, high: int) -> int | None:
    """A whole number from ``low`` to ``high`` (ASCII digits), or None when not given."""
    if text is None or text == "":
        return None
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidRequest(f"{param} is a whole number from {low} to {high}.", param=param)
    return int(text)


def _model(name: str | None) -> str | None:
    """A model name to filter by; one no column could hold (or SQL could take) is a 400."""
    if name is None or name == "":
        return None
    if len(name) > 128 or not name.isprintable():
        raise InvalidRequest("model is a model's name (at most 128 printable characters).",
                             param="model")
    return name


def _group(name: str) -> str:
    if name not in GROUPS:
        raise InvalidRequest(f"group_by is one of: {', '.join(GROUPS)}.", param="group_by")
    return name


def _encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"u1:{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    """The id a cursor of :func:`_encode_cursor` carries; anything else is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeError):
        raw = ""
    found = _CURSOR.fullmatch(raw) if len(cursor) <= 40 else None
    if found is None or not 1 <= int(found[1]) <= _MAX_ROW_ID:
        raise InvalidRequest("cursor is not one this API returned.", param="cursor")
    return int(found[1])


# -- queries ------------------------------------------------------------------------------
async def _rows_of(scope: UsageScope, *, start: datetime, end: datetime,
                   model: str | None, key_id: int | None) -> QuerySet[UsageRecord]:
    """The scope's usage rows in ``[start, end)``; ``key_id`` outside the scope is a 404."""
    query = UsageRecord.filter(account_id=scope.account_id, created_at__gte=start,
                               created_at__lt=end)
    if key_id is not None:
        if not await _sees_key(scope, key_id):
            raise NotFound(f"No key {key_id} in this account.", param="key_id")
        query = query.filter(key_id=key_id)
    elif scope.key_id is not None:
        query = query.filter(key_id=scope.key_id)
    if (name := _model(model)) is not None:
        query = query.filter(model=name)
    return query


async def _sees_key(scope: UsageScope, key_id: int) -> bool:
    if not 1 <= key_id <= _MAX_KEY_ID:
        return False
    if scope.key_id is not None:
        return key_id == scope.key_id
    return await ApiKey.exists(id=key_id, account_id=scope.account_id)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _row(values: dict[str, Any]) -> dict[str, Any]:
    """One request as the API shows it (the generation, a list's row, a CSV line)."""
    return {
        "request_id": values["request_id"],
        "created_at": _iso(values["created_at"]),
        "model": values["model"],
        "node_id": values["node_id"],
        "key_id": values["key_id"],
        "endpoint": values["endpoint"],
        "prompt_tokens": values["prompt_tokens"],
        "completion_tokens": values["completion_tokens"],
        **money("cost", int(values["cost"])),
        "latency_ms": values["latency_ms"],
        "status": values["status"],
        "streamed": bool(values["streamed"]),
        "cancelled": bool(values["cancelled"]),
        "counted_by": values["counted_by"],
    }


async def _page(query: QuerySet[UsageRecord], *, before: int | None,
                limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` rows below id ``before``, newest first, and the last id if more."""
    if before is not None:
        query = query.filter(id__lt=before)
    found = await query.order_by("-id").limit(limit + 1).values(*_FIELDS)
    more = len(found) > limit
    found = found[:limit]
    return [_row(values) for values in found], found[-1]["id"] if more else None


async def usage_rows(scope: UsageScope, *, start: datetime, end: datetime,
                     model: str | None = None, key_id: int | None = None,
                     cursor: str | None = None,
                     limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the scope's requests, newest first, and the next page's cursor or None.

    Raises:
      InvalidRequest: a bad ``cursor``, ``limit`` (1 to :data:`MAX_LIMIT`) or ``model``.
      NotFound: ``key_id`` is not a key the scope sees.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit is a whole number from 1 to {MAX_LIMIT}.", param="limit")
    before = _decode_cursor(cursor) if cursor else None
    query = await _rows_of(scope, start=start, end=end, model=model, key_id=key_id)
    rows, last = await _page(query, before=before, limit=limit)
    return rows, None if last is None else _encode_cursor(last)


class _UtcDay(SqlFunction):
    """A timestamp's UTC day as ``YYYY-MM-DD`` text, in SQLite's or PostgreSQL's words."""

    def __init__(self, term: Any) -> None:
        super().__init__("DATE", term)

    def get_function_sql(self, ctx: SqlContext) -> str:
        column = self.get_arg_sql(self.args[0], ctx)
        if ctx.dialect.value == "postgresql":
            return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        # SQLite keeps the ISO text Tortoise wrote; strftime reads its offset.
        return f"strftime('%Y-%m-%d', {column})"


class UtcDay(Function):
    database_func = _UtcDay


#: SQL's column for each grouping.
_GROUP_COLUMNS = {"day": "day", "model": "model", "key": "key_id"}


def _sums(values: dict[str, Any]) -> dict[str, Any]:
    return {"requests": int(values["n"] or 0), "prompt_tokens": int(values["pt"] or 0),
            "completion_tokens": int(values["ct"] or 0), "cost_micros": int(values["cu"] or 0)}


def _shown(sums: dict[str, Any]) -> dict[str, Any]:
    """Sums as the API shows them: the cost as USD beside its micro-dollars."""
    return {"requests": sums["requests"], "prompt_tokens": sums["prompt_tokens"],
            "completion_tokens": sums["completion_tokens"], **money("cost", sums["cost_micros"])}


async def _grouped(query: QuerySet[UsageRecord], *columns: str) -> list[dict[str, Any]]:
    """SQL's sums per value of ``columns`` (``day`` is the UTC day), in their order."""
    if "day" in columns:
        query = query.annotate(day=UtcDay("created_at"))
    found = await (query.annotate(n=Count("id"), pt=Sum("prompt_tokens"),
                                  ct=Sum("completion_tokens"), cu=Sum("cost"))
                   .group_by(*columns).order_by(*columns)
                   .values(*columns, "n", "pt", "ct", "cu"))
    return [{**{c: values[c] for c in columns}, **_sums(values)} for values in found]


async def usage_groups(scope: UsageScope, *, start: datetime, end: datetime, group_by: str,
                       model: str | None = None,
                       key_id: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scope's requests summed per ``group_by`` (day, model or key), and the totals.

    Groups come in ascending order of their day, model or key id; a day without usage
    has no group.

    Raises:
      InvalidRequest: an unknown ``group_by`` or a bad ``model``.
      NotFound: ``key_id`` is not a key the scope sees.
    """
    column = _GROUP_COLUMNS[_group(group_by)]
    query = await _rows_of(scope, start=start, end=end, model=model, key_id=key_id)
    groups = await _grouped(query, column)
    totals = {name: sum(g[name] for g in groups)
              for name in ("requests", "prompt_tokens", "completion_tokens", "cost_micros")}
    return ([{column: g[column], **_shown(g)} for g in groups], _shown(totals))


async def spend_by_day_and_model(scope: UsageScope, *, start: datetime, end: datetime,
                                 key_id: int | None = None,
                                 model: str | None = None) -> list[dict[str, Any]]:
    """Requests and micro-dollars per UTC day and model, for a stacked chart.

    Returns:
      ``[{"day": "YYYY-MM-DD", "model", "requests", "cost_micros"}]`` by day, then model.
    """
    query = await _rows_of(scope, start=start, end=end, model=model, key_id=key_id)
    return [{"day": g["day"], "model": g["model"], "requests": g["requests"],
             "cost_micros": g["cost_micros"]} for g in await _grouped(query, "day", "model")]


# -- CSV ----------------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    """A value as a spreadsheet may open it: text that reads as a formula is quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_line(row: dict[str, Any]) -> list[Any]:
    named = {**row, "cost_usd": row["cost"]}
    return [_cell(named[column]) for column in CSV_COLUMNS]


def _csv_text(lines: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(lines)
    return out.getvalue()


async def csv_chunks(scope: UsageScope, *, start: datetime, end: datetime,
                     model: str | None = None, key_id: int | None = None) -> AsyncIterator[str]:
    """The scope's requests as CSV text: the header, then one chunk per batch of rows.

    Rows come newest first, as in :func:`usage_rows`, read :data:`_EXPORT_BATCH` at a
    time. The filters are checked before the first chunk: take it before answering
    (a bad one raises as in :func:`usage_rows`).
    """
    query = await _rows_of(scope, start=start, end=end, model=model, key_id=key_id)
    yield _csv_text([list(CSV_COLUMNS)])
    before: int | None = None
    while True:
        rows, before = await _page(query, before=before, limit=_EXPORT_BATCH)
        if rows:
            yield _csv_text([_csv_line(row) for row in rows])
        if before is None:
            return


# -- routes -------------------------------------------------------------------------------
async def _scope(request: Request) -> UsageScope:
    key = await authenticate(request.app.ctx.portal, credentials(request.headers),
                             reading=True)
    return UsageScope.of(key)


def _filters(request: Request) -> dict[str, Any]:
    """The range and filters every usage route takes, checked."""
    start, end = parse_range(request.args.get("start"), request.args.get("end"))
    return {"start": start, "end": end, "model": _model(request.args.get("model")),
            "key_id": _number(request.args.get("key_id"), "key_id", low=1, high=_MAX_KEY_ID)}


@bp.get("/usage")
async def list_usage(request: Request) -> HTTPResponse:
    scope = await _scope(request)
    filters = _filters(request)
    group_by = request.args.get("group_by")
    if group_by:
        groups, totals = await usage_groups(scope, group_by=group_by, **filters)
        return json({"object": "list", "group_by": group_by, "data": groups,
                     "totals": totals})
    limit = _number(request.args.get("limit"), "limit", low=1, high=MAX_LIMIT)
    rows, cursor = await usage_rows(scope, cursor=request.args.get("cursor"),
                                    limit=100 if limit is None else limit, **filters)
    return json({"object": "list", "data": rows, "has_more": cursor is not None,
                 "next_cursor": cursor})


async def send_csv(request: Request, chunks: AsyncIterator[str], name: str) -> None:
    """Stream ``chunks`` as the download ``name``; the first is read before the answer
    starts, so that a bad filter is still a proper 400 or 404."""
    first = await anext(chunks)
    response = await request.respond(
        content_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"',
                 "cache-control": "no-store"})
    await response.send(first)
    async for chunk in chunks:
        await response.send(chunk)
    await response.eof()


@bp.get("/usage/export")
async def export_usage(request: Request) -> None:
    scope = await _scope(request)
    filters = _filters(request)
    await send_csv(request, csv_chunks(scope, **filters),
                   f"usage-{filters['start']:%Y-%m-%d}-{filters['end']:%Y-%m-%d}.csv")


@bp.get("/generations/<request_id:str>")
async def generation(request: Request, request_id: str) -> HTTPResponse:
    scope = await _scope(request)
    row = await _generation(scope, request_id)
    if row is None:
        raise NotFound("No request with this id among your calls.", param="request_id")
    return json({"data": row})


async def _generation(scope: UsageScope, request_id: str) -> dict[str, Any] | None:
    """The scope's request ``request_id``, or None (also for an id no column could hold)."""
    if len(request_id) > 64 or not request_id.isprintable():
        return None
    query = UsageRecord.filter(request_id=request_id, account_id=scope.account_id)
    if scope.key_id is not None:
        query = query.filter(key_id=scope.key_id)
    found = await query.limit(1).values(*_FIELDS)
    return _row(found[0]) if found else None
