"""A stacked bar chart of spend per day and model, drawn on the server as SVG geometry.

:func:`spend_chart` turns :func:`edge.api.usage.spend_by_day_and_model`'s rows into
numbers and words only (rectangles, ticks, labels, colours); the template
``_spend_chart.html`` writes them out as inline SVG, escaped like any other text.
No script draws it, so the page works without JavaScript and offline, and the
CSP needs no exception (colours are SVG attributes, not inline styles).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date, timedelta
from typing import Any

from edge.billing.money import format_usd

__all__ = ["Chart", "colour_of", "nice_step", "spend_chart", "usd_tick"]

#: Series colours, told apart by colour-blind eyes too (Okabe & Ito, then Tableau).
PALETTE = ("#2b59c3", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#8c6d31",
           "#0072b2", "#b07aa1", "#59a14f", "#9c755f", "#6b6ecf")

#: The drawing's size (the SVG scales to its box) and margins, in SVG units.
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 76, 12, 14, 44


def colour_of(index: int) -> str:
    """The ``index``-th series colour: the palette, then hues a golden angle apart."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 137.508) % 360
    return f"hsl({hue:.0f}, 55%, 45%)"


def nice_step(top: int, ticks: int = 4) -> int:
    """A round step (1, 2 or 5 × 10ⁿ micro-dollars) that splits ``top`` in about ``ticks``."""
    if top <= 0:
        return 1
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return int(factor * power) or 1
    return int(10 * power)  # pragma: no cover - the loop always returns


def usd_tick(micros: int, step: int) -> str:
    """An axis label in dollars, with as many decimals as the step needs (and no more)."""
    decimals = max(2, min(6, 6 - math.floor(math.log10(step)))) if step > 0 else 2
    if micros == 0:
        return "$0"
    return f"${micros / 1_000_000:,.{decimals}f}"


@dataclasses.dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclasses.dataclass
class Series:
    model: str
    colour: str
    requests: int
    cost_micros: int
    bars: list[Bar]

    @property
    def cost(self) -> str:
        return format_usd(self.cost_micros)


@dataclasses.dataclass
class Tick:
    position: float
    label: str


@dataclasses.dataclass
class Chart:
    """What the template draws; sizes in SVG units, money in micro-dollars."""

    width: int
    height: int
    left: int
    top: int
    plot_width: float
    plot_height: float
    series: list[Series]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total_micros: int
    total_requests: int
    first_day: str
    last_day: str
    days: int

    @property
    def empty(self) -> bool:
        return not self.series

    @property
    def bottom(self) -> float:
        return self.top + self.plot_height

    @property
    def right(self) -> float:
        return self.left + self.plot_width

    @property
    def total(self) -> str:
        return format_usd(self.total_micros)


def spend_chart(rows: list[dict[str, Any]], *, first: date, last: date) -> Chart:
    """The chart of ``rows`` (``{"day", "model", "requests", "cost_micros"}``) for the days
    ``first`` to ``last``, inclusive: a bar a day, a colour a model (by name), the most
    spent at the bottom of each stack."""
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    index = {day.isoformat(): n for n, day in enumerate(days)}
    cost: dict[str, dict[int, int]] = {}
    requests: dict[str, dict[int, int]] = {}
    for row in rows:
        slot = index.get(str(row["day"]))
        if slot is None:
            continue
        model = str(row["model"])
        cost.setdefault(model, {})[slot] = cost.get(model, {}).get(slot, 0) + \
            int(row["cost_micros"])
        requests.setdefault(model, {})[slot] = requests.get(model, {}).get(slot, 0) + \
            int(row["requests"])
    names = sorted(cost)
    colours = {name: colour_of(n) for n, name in enumerate(names)}
    # The largest spender at the bottom, where its bars are easiest to compare.
    stacking = sorted(names, key=lambda name: (-sum(cost[name].values()), name))
    daily = [sum(cost[name].get(slot, 0) for name in names) for slot in range(len(days))]
    step = nice_step(max(daily, default=0))
    top = max(step, -(-max(daily, default=0) // step) * step)
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot_width = plot_width / max(1, len(days))
    bar_width = max(1.0, slot_width * 0.72)
    base = [0] * len(days)
    series = []
    for name in stacking:
        bars = []
        for slot, micros in sorted(cost[name].items()):
            if micros <= 0:
                continue
            y0 = TOP + plot_height * (1 - base[slot] / top)
            y1 = TOP + plot_height * (1 - (base[slot] + micros) / top)
            base[slot] += micros
            count = requests[name].get(slot, 0)
            bars.append(Bar(
                x=round(LEFT + slot * slot_width + (slot_width - bar_width) / 2, 2),
                y=round(y1, 2), width=round(bar_width, 2), height=round(max(y0 - y1, 0.5), 2),
                title=f"{days[slot].isoformat()} · {name}: ${format_usd(micros)} "
                      f"({count} request{'' if count == 1 else 's'})"))
        series.append(Series(model=name, colour=colours[name],
                             requests=sum(requests[name].values()),
                             cost_micros=sum(cost[name].values()), bars=bars))
    series.sort(key=lambda s: s.model)  # the legend, by name (the stacking order is above)
    y_ticks = [Tick(round(TOP + plot_height * (1 - value / top), 2), usd_tick(value, step))
               for value in range(0, top + 1, step)]
    every = max(1, math.ceil(len(days) / 8))
    x_ticks = [Tick(round(LEFT + (slot + 0.5) * slot_width, 2), days[slot].strftime("%b %d"))
               for slot in range(0, len(days), every)]
    return Chart(width=WIDTH, height=HEIGHT, left=LEFT, top=TOP, plot_width=plot_width,
                 plot_height=plot_height, series=series, y_ticks=y_ticks, x_ticks=x_ticks,
                 total_micros=sum(s.cost_micros for s in series),
                 total_requests=sum(s.requests for s in series),
                 first_day=first.isoformat(), last_day=last.isoformat(), days=len(days))
