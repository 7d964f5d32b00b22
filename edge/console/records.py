"""The console's record pages: queued jobs, Stripe's webhook events, the contact inbox
and the audit log; the payments (:mod:`edge.console.payments`) and the ledger
(:mod:`edge.console.ledger`) are beside.

Every page reads through the functions the admin API reads through, so a page and its
route (named on each page function) show the same rows. A filter the API would refuse
is refused here too, as a 400 page naming it (:func:`refusing`); ``limit`` out of range
is the default (:func:`edge.console.common.page_limit`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec

from sanic import HTTPResponse, Request

from edge import audit
from edge.console.common import bp, page_limit, render
from edge.contact import inbox
from edge.db.models import MAX_ID
from edge.errors import InvalidRequest, NotFound

__all__ = ["audit_page", "choice_arg", "id_arg", "inbox_page", "refusing", "text_arg",
           "when"]

P = ParamSpec("P")
Page = Callable[Concatenate[Request, P], Awaitable[HTTPResponse]]


def refusing(page: Page[P]) -> Page[P]:
    """A page that answers a bad filter (:class:`InvalidRequest`) or an unknown record
    (:class:`NotFound`) with the console's error page and that status, not the API's JSON."""

    @functools.wraps(page)
    async def answer(request: Request, *args: P.args, **kwargs: P.kwargs) -> HTTPResponse:
        try:
            return await page(request, *args, **kwargs)
        except (InvalidRequest, NotFound) as exc:
            return await render(request, "console/error.html", status=exc.status,
                                message=str(exc), section=_section(request))

    return answer


def _section(request: Request) -> str:
    return request.path.removeprefix("/admin/console/").split("/", 1)[0]


def text_arg(request: Request, name: str, longest: int = 200) -> str | None:
    """A query argument of printable text up to ``longest`` characters; None when empty.

    Raises:
      InvalidRequest: it is longer, or holds a control character (a NUL is no text
        PostgreSQL takes).
    """
    value = request.args.get(name, "").strip()
    if len(value) > longest or not value.isprintable():
        raise InvalidRequest(f"'{name}' is at most {longest} printable characters.",
                             param=name)
    return value or None


def choice_arg(request: Request, name: str, choices: Iterable[str]) -> str | None:
    """A query argument that is one of ``choices``; None when empty.

    Raises:
      InvalidRequest: it is something else.
    """
    value = request.args.get(name, "")
    allowed = list(choices)
    if value and value not in allowed:
        raise InvalidRequest(f"'{name}' must be one of {', '.join(allowed)}.", param=name)
    return value or None


def id_arg(request: Request, name: str) -> int | None:
    """A query argument that is a row id (1 to :data:`MAX_ID`); None when empty.

    Raises:
      InvalidRequest: it is not such a number.
    """
    value = request.args.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) < 20
            and 0 < int(value) <= MAX_ID):
        raise InvalidRequest(f"'{name}' must be a number.", param=name)
    return int(value)


def when(value: str | int | datetime | None) -> str:
    """A time (ISO 8601, a Unix time in seconds, or a datetime) as the pages show it:
    ``2025-01-31 23:59:59`` in UTC; an em dash for none."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:
        moment = value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def readable(value: Any) -> str:
    """JSON as a person reads it: indented, keys in order, no escaped letters."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@bp.get("/inbox")
@refusing
async def inbox_page(request: Request) -> HTTPResponse:
    """The contact messages, newest first, as ``GET /admin/contact`` reads them."""
    rows = [inbox.message_view(row) for row in await inbox.recent(page_limit(request))]
    for row in rows:
        row["created"], row["mailed"] = when(row["created_at"]), when(row["mailed_at"])
    return await render(request, "console/inbox.html", section="inbox", messages=rows)


@bp.get("/audit")
@refusing
async def audit_page(request: Request) -> HTTPResponse:
    """The audit log, newest first, of one target or action, as ``GET /admin/audit``."""
    target, action = text_arg(request, "target"), text_arg(request, "action", 64)
    limit = page_limit(request)
    rows = [audit.entry_view(row)
            for row in await audit.recent(target=target, action=action, limit=limit)]
    for row in rows:
        row["created"] = when(row["created_at"])
        row["before_json"] = None if row["before"] is None else readable(row["before"])
        row["after_json"] = None if row["after"] is None else readable(row["after"])
    return await render(request, "console/audit.html", section="audit", entries=rows,
                        target=target or "", action=action or "", limit=limit)
