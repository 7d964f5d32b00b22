"""The console's nodes page: every node's state, health, load (calls open on it from
every worker), recent errors, uptime and cost, with its actions (boot, stop, reboot,
drain, terminate) and a launch form.

The actions are the admin API's (``POST /admin/nodes/<id>/<action>``,
``POST /admin/nodes``), so they reach the same actors as ``portal nodes``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sanic import HTTPResponse, Request
from tortoise.functions import Count

from edge.admin import ACTIONS, node_entry
from edge.billing.money import format_usd
from edge.console.common import bp, render
from edge.db.models import LLM, Node, UsageRecord
from edge.fleet.slots import open_calls

__all__ = ["nodes_page"]

#: How far back the page counts a node's failed requests.
ERROR_WINDOW = timedelta(hours=1)


async def recent_errors(since: datetime) -> dict[int, int]:
    """Failed requests (5xx) per node since ``since``: one grouped SQL count."""
    rows = await UsageRecord.filter(created_at__gte=since, status__gte=500,
                                    node_id__isnull=False) \
        .annotate(errors=Count("id")).group_by("node_id").values("node_id", "errors")
    return {int(row["node_id"]): int(row["errors"]) for row in rows}


@bp.get("/nodes")
async def nodes_page(request: Request) -> HTTPResponse:
    models = {m.id: m.name for m in await LLM.all().order_by("name")}
    errors = await recent_errors(datetime.now(UTC) - ERROR_WINDOW)
    nodes = await Node.all().order_by("model_id", "id")
    in_flight = await open_calls(request.app.ctx.portal.store, [n.id for n in nodes])
    rows = []
    for node in nodes:
        entry = node_entry(node, models.get(node.model_id, ""))
        entry["in_flight"] = in_flight.get(node.id, 0)
        entry["errors"] = errors.get(node.id, 0)
        entry["cost_so_far"] = format_usd(node.hourly_cost * entry["uptime_seconds"] // 3600)
        rows.append(entry)
    return await render(request, "console/nodes.html", section="nodes", nodes=rows,
                        actions=ACTIONS, models=sorted(models.values()),
                        error_window=int(ERROR_WINDOW.total_seconds() // 60))
