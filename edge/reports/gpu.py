"""What the GPU nodes cost: the hours of their runs (:class:`~edge.db.models.NodeRun`)
times the hourly cost each run had.

A run counts for the part of it inside a day, an open one up to the report's end. The
figures stay exact integers, micro-dollars times microseconds per hour (:data:`UNIT`),
until a sum is shown: :func:`micros` rounds each shown figure once, to the nearest
micro-dollar. Runs are read as rows (a node has one for each time it was billed, a few
a day), not summed by SQL: their overlap with a day is datetime arithmetic that SQLite
and PostgreSQL spell differently.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from tortoise.expressions import Q

from edge.db.models import NodeRun
from edge.reports.days import Days

__all__ = ["UNIT", "gpu_units", "micros"]

#: Microseconds in an hour: a run's cost is its microseconds × its hourly cost / UNIT.
UNIT = 3_600_000_000

_MICROSECOND = timedelta(microseconds=1)


def micros(units: int) -> int:
    """Cost units (micro-dollars × microseconds per hour) as micro-dollars, to the nearest."""
    return (units + UNIT // 2) // UNIT


async def gpu_units(days: Days) -> dict[tuple[date, int], int]:
    """Cost units of the node runs in each day, by day and model id (days without runs
    are left out)."""
    units: dict[tuple[date, int], int] = defaultdict(int)
    runs = await NodeRun.filter(Q(ended_at__isnull=True) | Q(ended_at__gt=days.start),
                                started_at__lt=days.end).values(
        "model_id", "hourly_cost", "started_at", "ended_at")
    for run in runs:
        ended = run["ended_at"] or days.end
        for day, start, end in days.spans():
            overlap = min(ended, end) - max(run["started_at"], start)
            if overlap > timedelta(0):
                units[day, run["model_id"]] += overlap // _MICROSECOND * run["hourly_cost"]
    return dict(units)
