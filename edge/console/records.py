"""The console's record pages: queued jobs, Stripe's webhook events, the contact inbox
and the audit log; the payments (:mod:`edge.console.payments`) and the ledger
(:mod:`edge.console.ledger`) are beside.

Every page reads through the functions the admin API reads through, so a page and its
route (named on each page function) show the same rows. A filter the API would refuse
is refused here too, by the same readers (:mod:`edge.api.fields`), as a 400 page naming
it (:func:`refusing`); a ``limit`` out of range is the default
(:func:`edge.console.common.page_limit`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec

from sanic import HTTPResponse, Request

from edge import audit, metrics
from edge.api.fields import query_id, query_text
from edge.console.common import bp, page_limit, render
from edge.contact import inbox
from edge.db.models import JobStatus
from edge.errors import InvalidRequest, NotFound
from edge.jobs.listing import list_jobs
from edge.payments.history import event_view
from edge.payments.records import IGNORED, recent_events

__all__ = ["audit_page", "choice_arg", "id_arg", "inbox_page", "jobs_page", "readable",
           "refusing", "webhook_deliveries", "webhooks_page", "when"]

#: The statuses a job may be in, as the filter offers them.
JOB_STATUSES = tuple(str(status) for status in JobStatus)
#: What becomes of a webhook delivery (``portal_webhooks_total``'s ``outcome``).
WEBHOOK_OUTCOMES = ("handled", "duplicate", "refused", "failed")

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
    """:func:`edge.api.fields.query_id`, with an empty field (a filter form left blank)
    read as absent."""
    return query_id(request, name) if request.args.get(name) else None


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


@bp.get("/jobs")
@refusing
async def jobs_page(request: Request) -> HTTPResponse:
    """Queued jobs newest first, by status, account and model, as ``GET /admin/jobs``."""
    status = choice_arg(request, "status", JOB_STATUSES)
    account = id_arg(request, "account")
    model = query_text(request, "model", 128)
    limit = page_limit(request)
    rows = await list_jobs(status=JobStatus(status) if status else None, account=account,
                           model=model, limit=limit)
    for row in rows:
        for name in ("created", "started", "finished", "deadline"):
            row[name] = when(row[f"{name}_at"])
        error = row.get("error")
        row["error_text"] = error.get("message", readable(error)) \
            if isinstance(error, dict) else ""
    return await render(request, "console/jobs.html", section="jobs", jobs=rows,
                        statuses=JOB_STATUSES, chosen=status or "", account=account or "",
                        model=model or "", limit=limit)


@bp.get("/webhooks")
@refusing
async def webhooks_page(request: Request) -> HTTPResponse:
    """Stripe's events newest first, by type and whether they were ignored, as
    ``GET /admin/payments/events``; beside them, the deliveries counted since start,
    refused and failed ones too (those are not recorded: Stripe sends them again)."""
    event_type = query_text(request, "type", 100)
    ignored = choice_arg(request, "ignored", ("true", "false"))
    limit = page_limit(request)
    events = await recent_events(event_type=event_type,
                                 ignored=None if ignored is None else ignored == "true",
                                 limit=limit)
    rows = [{**event_view(event), "received": when(event.received_at),
             "ignored": event.outcome.startswith(IGNORED)} for event in events]
    return await render(request, "console/webhooks.html", section="webhooks", events=rows,
                        deliveries=webhook_deliveries(), type=event_type or "",
                        ignored=ignored or "", limit=limit)


def webhook_deliveries() -> dict[str, int]:
    """Webhook deliveries since the portal started, by outcome (``handled``, ``duplicate``,
    ``refused``, ``failed``), over every worker: ``portal_webhooks_total`` as ``/metrics``
    exports it."""
    counts = dict.fromkeys(WEBHOOK_OUTCOMES, 0)
    for family in metrics.families():
        if family.name != "portal_webhooks":
            continue
        for sample in family.samples:
            if sample.name == "portal_webhooks_total":
                outcome = sample.labels.get("outcome", "")
                counts[outcome] = counts.get(outcome, 0) + int(sample.value)
    return counts


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
    target, action = query_text(request, "target", 200), query_text(request, "action", 64)
    limit = page_limit(request)
    rows = [audit.entry_view(row)
            for row in await audit.recent(target=target, action=action, limit=limit)]
    for row in rows:
        row["created"] = when(row["created_at"])
        row["before_json"] = None if row["before"] is None else readable(row["before"])
        row["after_json"] = None if row["after"] is None else readable(row["after"])
    return await render(request, "console/audit.html", section="audit", entries=rows,
                        target=target or "", action=action or "", limit=limit)
