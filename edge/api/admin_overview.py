"""``GET /admin/overview``: what was earned, what the GPUs cost, what was served, and what
customers hold now (bearer ``PORTAL_ADMIN_TOKEN``).

The figures and what each one counts are :mod:`edge.reports.overview`'s; this module
only shows them: every sum of money as a USD string beside its micro-dollars.
"""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge.admin import require_admin
from edge.api.shapes import money
from edge.reports.overview import DayFigures, ModelFigures, Overview, WindowFigures, overview

__all__ = ["bp", "overview_view"]

bp = Blueprint("admin_overview", url_prefix="/admin")
bp.on_request(require_admin)


@bp.get("/overview")
async def show_overview(request: Request):
    """The overview now, with what Redis holds reserved."""
    return json_response(overview_view(await overview(store=request.app.ctx.portal.store)))


def overview_view(figures: Overview) -> dict[str, Any]:
    """The overview as ``GET /admin/overview`` and ``portal overview --json`` show it."""
    return {
        "object": "overview",
        "at": figures.at.isoformat(),
        "windows": {w.name: _window_view(w) for w in figures.windows},
        **money("liability", figures.liability),
        **money("reserved", figures.reserved),
        "open_reservations": figures.open_reservations,
        "days": [_day_view(d) for d in figures.days],
    }


def _window_view(window: WindowFigures) -> dict[str, Any]:
    return {
        "start": window.start.isoformat(), "end": window.end.isoformat(),
        **money("revenue", window.revenue), **money("topups", window.topups),
        **money("refunds", window.refunds), **money("adjustments", window.adjustments),
        **money("gpu_cost", window.gpu_cost), **money("margin", window.margin),
        "requests": window.requests, "prompt_tokens": window.prompt_tokens,
        "completion_tokens": window.completion_tokens,
        "errors": {"client": window.client_errors, "server": window.server_errors},
        "models": [_model_view(m) for m in window.models],
    }


def _model_view(model: ModelFigures) -> dict[str, Any]:
    return {"model": model.model, **money("revenue", model.revenue),
            **money("gpu_cost", model.gpu_cost), **money("margin", model.margin),
            "requests": model.requests, "prompt_tokens": model.prompt_tokens,
            "completion_tokens": model.completion_tokens}


def _day_view(day: DayFigures) -> dict[str, Any]:
    return {"day": day.day.isoformat(), **money("revenue", day.revenue),
            **money("topups", day.topups), **money("gpu_cost", day.gpu_cost),
            "requests": day.requests}
