"""The activity page: spend per day by model (an SVG chart), totals and the usage rows,
filtered by key and model, and the same rows as CSV.

A session's manage key sees its whole account (:class:`edge.api.usage.UsageScope`).
The range is whole UTC days, ``from`` to ``to`` inclusive (by default the last 30,
today included), which is ``start=from&end=to+1`` in ``/v1/usage``'s half-open terms.
A key of another account in the filter is a 404, as in the API.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sanic import Request

from edge.api.usage import (
    MAX_RANGE_DAYS,
    UsageScope,
    csv_chunks,
    parse_range,
    send_csv,
    spend_by_day_and_model,
    usage_groups,
    usage_rows,
)
from edge.billing.money import format_usd
from edge.db.models import ApiKey
from edge.errors import InvalidRequest
from edge.web.chart import spend_chart
from edge.web.common import bp, render, signed_in

__all__ = ["DEFAULT_DAYS", "PAGE_ROWS"]

#: Days the page shows unless asked for others.
DEFAULT_DAYS = 30
#: Usage rows per page of the table.
PAGE_ROWS = 50

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ID = re.compile(r"[0-9]{1,10}")


def _day(text: str, param: str) -> date:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{param} is a date, YYYY-MM-DD.", param=param) from None


def _filters(request: Request) -> dict[str, Any]:
    """The page's filters, checked: the days, and the key and model (None: all)."""
    args = request.args
    today = datetime.now(UTC).date()
    to, since = args.get("to", "").strip(), args.get("from", "").strip()
    try:
        last = _day(to, "to") if to else today
        first = _day(since, "from") if since else last - timedelta(days=DEFAULT_DAYS - 1)
        after = last + timedelta(days=1)
    except OverflowError:
        raise InvalidRequest("The days are out of the calendar's range.", param="to") from None
    if first > last:
        raise InvalidRequest("from is a day before to (or the same one).", param="from")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise InvalidRequest(f"The page shows at most {MAX_RANGE_DAYS} days.", param="from")
    start, end = parse_range(first.isoformat(), after.isoformat())
    key = args.get("key", "").strip()
    if key and not _ID.fullmatch(key):
        raise InvalidRequest("key is a key's id.", param="key")
    model = args.get("model", "").strip()
    return {"first": first, "last": last, "start": start, "end": end,
            "key_id": int(key) if key else None, "model": model or None}


def _query(filters: dict[str, Any], **more: str) -> str:
    """The page's query string for ``filters`` (and ``more``), without empty values."""
    params = {"from": filters["first"].isoformat(), "to": filters["last"].isoformat(),
              "key": "" if filters["key_id"] is None else str(filters["key_id"]),
              "model": filters["model"] or "", **more}
    return urlencode({name: value for name, value in params.items() if value})


@bp.get("/account/activity")
async def activity(request: Request):
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    filters = _filters(request)
    scope = UsageScope.of(key)
    within = {"start": filters["start"], "end": filters["end"]}
    chosen = {"key_id": filters["key_id"], "model": filters["model"]}
    # The filters offer the account's keys, and the models it used in these days.
    keys = await ApiKey.filter(account_id=key.account_id).order_by("id")
    names = {row.id: row.name for row in keys}
    used, _all = await usage_groups(scope, group_by="model", **within)
    models = sorted({g["model"] for g in used} | ({filters["model"]} - {None}))
    groups, totals = await usage_groups(scope, group_by="model", **within, **chosen)
    chart = spend_chart(await spend_by_day_and_model(scope, **within, **chosen),
                        first=filters["first"], last=filters["last"])
    rows, cursor = await usage_rows(scope, cursor=request.args.get("cursor") or None,
                                    limit=PAGE_ROWS, **within, **chosen)
    table = [{**row, "when": row["created_at"][:19].replace("T", " "),
              "key_name": names.get(row["key_id"], f"#{row['key_id']}")} for row in rows]
    colours = {s.model: s.colour for s in chart.series}
    return await render(
        request, "activity.html", key=key, chart=chart, rows=table, totals=totals,
        groups=[{**g, "colour": colours.get(g["model"], "#999")} for g in groups],
        keys=[{"id": row.id, "name": row.name, "prefix": row.prefix,
               "revoked": row.revoked_at is not None} for row in keys],
        models=models, filters=filters, start=filters["start"].date().isoformat(),
        end=filters["end"].date().isoformat(),
        older=f"/account/activity?{_query(filters, cursor=cursor)}" if cursor else None,
        newest=f"/account/activity?{_query(filters)}" if request.args.get("cursor") else None,
        csv_url=f"/account/activity.csv?{_query(filters)}",
        tokens=totals["prompt_tokens"] + totals["completion_tokens"],
        chart_total=format_usd(chart.total_micros))


@bp.get("/account/activity.csv")
async def activity_csv(request: Request):
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    filters = _filters(request)
    chunks = csv_chunks(UsageScope.of(key), start=filters["start"], end=filters["end"],
                        key_id=filters["key_id"], model=filters["model"])
    await send_csv(request, chunks,
                   f"usage-{filters['first']:%Y-%m-%d}-{filters['last']:%Y-%m-%d}.csv")
