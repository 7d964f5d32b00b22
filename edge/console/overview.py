"""The console's overview: revenue and top-ups, GPU cost and margin per model, requests,
tokens and errors for today, 7 and 30 days; what customers hold and what is reserved now;
a chart per day. The figures are :func:`edge.reports.overview.overview`'s, the same that
``GET /admin/overview`` and ``portal overview`` show.
"""

from __future__ import annotations

from sanic import HTTPResponse, Request

from edge.console.charts import daily_chart
from edge.console.common import bp, render
from edge.reports.overview import overview

__all__ = ["overview_page"]


@bp.get("/")
async def overview_page(request: Request) -> HTTPResponse:
    figures = await overview(store=request.app.ctx.portal.store)
    return await render(request, "console/overview.html", section="overview", figures=figures,
                        chart=daily_chart(figures.days))
