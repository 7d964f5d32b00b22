"""UTC days ending at a moment: the buckets every figure of a report is summed in.

SQL puts each row in its day with one ``CASE`` over the days' boundaries, computed here
and passed as parameters: the same expression on SQLite and PostgreSQL, no date
function of either, and the very boundaries node runs are split at (``edge.reports.gpu``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from tortoise.expressions import Case, When

__all__ = ["Days"]


@dataclasses.dataclass(frozen=True, slots=True)
class Days:
    """The last ``len(starts)`` UTC days up to ``end``, oldest first; the last one is
    ``end``'s own day, which ends at ``end`` (the others at midnight)."""

    starts: tuple[datetime, ...]
    end: datetime

    @classmethod
    def ending(cls, end: datetime, count: int) -> Days:
        """``count`` days, ``end``'s day the last (``end``: aware, any zone)."""
        end = end.astimezone(UTC)
        midnight = datetime.combine(end.date(), time(), UTC)
        return cls(tuple(midnight - timedelta(days=n) for n in range(count - 1, -1, -1)), end)

    @property
    def start(self) -> datetime:
        return self.starts[0]

    @property
    def dates(self) -> tuple[date, ...]:
        return tuple(start.date() for start in self.starts)

    def spans(self) -> Iterator[tuple[date, datetime, datetime]]:
        """Each day, with when it starts and ends (half-open)."""
        ends = (*self.starts[1:], self.end)
        for start, end in zip(self.starts, ends, strict=True):
            yield start.date(), start, end

    def label_of(self, column: str) -> Case:
        """SQL's ``YYYY-MM-DD`` of ``column``'s day, for rows filtered to
        ``[start, end)`` (:meth:`within`)."""
        return Case(*(When(then=start.date().isoformat(), **_before(column, after))
                      for start, after in pairwise(self.starts)),
                    default=self.starts[-1].date().isoformat())

    def within(self, column: str) -> dict[str, datetime]:
        """The filter of the rows whose ``column`` falls in these days."""
        return {f"{column}__gte": self.start, f"{column}__lt": self.end}


def _before(column: str, at: datetime) -> dict[str, Any]:
    """The filter of the rows whose ``column`` is before ``at``."""
    return {f"{column}__lt": at}
