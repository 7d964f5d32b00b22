"""The overview's chart: revenue, top-ups and GPU cost side by side, a group of bars a
UTC day, drawn on the server as SVG geometry like the account's spend chart
(:mod:`edge.web.chart`, whose shapes, ticks and template this reuses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edge.billing.money import format_usd
from edge.reports.overview import DayFigures
from edge.web.chart import (
    BOTTOM,
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Bar,
    Chart,
    Series,
    Tick,
    nice_step,
    usd_tick,
)

__all__ = ["SERIES", "daily_chart"]

#: The bars of a day: label, the DayFigures field, colour (revenue blue, top-ups green,
#: the GPUs' cost orange: told apart by colour-blind eyes too).
SERIES = (("Revenue", "revenue", "#2b59c3"), ("Top-ups", "topups", "#009e73"),
          ("GPU cost", "gpu_cost", "#e69f00"))


def daily_chart(days: Sequence[DayFigures]) -> Chart:
    """The chart of ``days`` (oldest first): per day, one bar per :data:`SERIES`."""
    tallest = max((getattr(day, field) for day in days for _, field, _ in SERIES), default=0)
    step = nice_step(tallest)
    top = max(step, -(-tallest // step) * step)
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot_width = plot_width / max(1, len(days))
    bar_width = max(1.0, slot_width * 0.8 / len(SERIES))
    series = []
    for index, (label, field, colour) in enumerate(SERIES):
        bars = []
        for slot, day in enumerate(days):
            micros = getattr(day, field)
            if micros <= 0:
                continue
            height = plot_height * micros / top
            bars.append(Bar(
                x=round(LEFT + slot * slot_width + slot_width * 0.1 + index * bar_width, 2),
                y=round(TOP + plot_height - height, 2), width=round(bar_width, 2),
                height=round(max(height, 0.5), 2),
                title=f"{day.day.isoformat()} · {label}: ${format_usd(micros)}"))
        series.append(Series(model=label, colour=colour, requests=sum(d.requests for d in days)
                             if field == "revenue" else 0,
                             cost_micros=sum(getattr(d, field) for d in days), bars=bars))
    y_ticks = [Tick(round(TOP + plot_height * (1 - value / top), 2), usd_tick(value, step))
               for value in range(0, top + 1, step)]
    every = max(1, math.ceil(len(days) / 8))
    x_ticks = [Tick(round(LEFT + (slot + 0.5) * slot_width, 2), days[slot].day.strftime("%b %d"))
               for slot in range(0, len(days), every)]
    first, last = (days[0].day.isoformat(), days[-1].day.isoformat()) if days else ("", "")
    return Chart(width=WIDTH, height=HEIGHT, left=LEFT, top=TOP, plot_width=plot_width,
                 plot_height=plot_height, series=[s for s in series if s.bars], y_ticks=y_ticks,
                 x_ticks=x_ticks, total_micros=series[0].cost_micros,
                 total_requests=sum(d.requests for d in days), first_day=first, last_day=last,
                 days=len(days))
