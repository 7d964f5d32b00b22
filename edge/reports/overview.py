"""The figures of the operator's overview: what was earned, what the GPUs cost, what was
served, and what customers hold now.

:func:`overview` computes them at a moment ``now`` for the windows of :data:`WINDOWS`,
whole UTC days: ``today`` (since midnight UTC), ``7d`` and ``30d`` (the last 7 and 30
days, today included); and for each of the last :data:`SERIES_DAYS` days, the chart's
bars. A window is the sum of its days, so it always equals the sum of its bars. Money
is integer micro-dollars. What each figure counts:

- **revenue**: the usage charged, the sum of ``usage_log.cost`` of the requests made in
  the window. The ``usage`` ledger rows sum to the same (the ledger writer writes both
  from one settlement, in one transaction, with one amount and one time), but a usage row
  also carries the model, the status and the tokens: one grouped query gives revenue,
  requests, tokens and errors per model and day. Usage the bookkeeper has not copied into
  SQL yet (about a second's) is not counted yet.
- **top-ups**, **refunds**, **adjustments**: the ledger's ``topup`` rows (Stripe checkouts,
  operators' credits, new accounts' opening credit), its ``refund`` rows (Stripe refunds
  and lost disputes, and refund debt collected later) as what was given back, positive,
  and its ``adjustment`` rows, signed.
- **GPU cost**: node-hours × hourly cost, from the node runs (:mod:`edge.reports.gpu`),
  an open run up to ``now``; **margin**: revenue − GPU cost, per model and in all.
- **requests**, **prompt** and **completion tokens**: the usage rows and their tokens;
  **errors**: requests that ended with a status from 400 to 499 (``client``: refused by
  the node as invalid, 499 cancelled by the client) or of 500 and above (``server``: the
  nodes failed, were unavailable or too slow, or the edge did). A refusal before anything
  was reserved (401, 402, 429, 503 ``model_warming``) leaves no usage row: not counted.
- **liability**: the sum of the accounts' balances in SQL, the outstanding balances
  ``/metrics`` reads: the credit customers hold. **reserved**: what the open credit
  reservations hold in Redis right now, a part of that credit.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, cast

from tortoise.functions import Count, Sum

from edge.db.models import LLM, LedgerEntry, LedgerKind, UsageRecord
from edge.fleet.nodes import reconcile_runs
from edge.reports.days import Days
from edge.reports.gpu import gpu_units, micros
from edge.reports.holdings import outstanding_balances, reserved_credit

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["SERIES_DAYS", "WINDOWS", "DayFigures", "ModelFigures", "Overview", "WindowFigures",
           "overview"]

#: The windows, by name, and the UTC days each covers (today's included).
WINDOWS = (("today", 1), ("7d", 7), ("30d", 30))
#: Days of the chart's series, the longest window's.
SERIES_DAYS = 30
#: Ledger kinds summed beside the usage.
_CREDIT_KINDS = (LedgerKind.TOPUP, LedgerKind.REFUND, LedgerKind.ADJUSTMENT)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelFigures:
    """One model's part of a window; money in micro-dollars."""

    model: str
    revenue: int
    gpu_cost: int
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def margin(self) -> int:
        return self.revenue - self.gpu_cost


@dataclasses.dataclass(frozen=True, slots=True)
class WindowFigures:
    """A window's figures, ``[start, end)``; money in micro-dollars. ``models``: each model
    that was used or had a node billed in it, the highest revenue first."""

    name: str
    start: datetime
    end: datetime
    revenue: int
    topups: int
    refunds: int
    adjustments: int
    gpu_cost: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    client_errors: int
    server_errors: int
    models: tuple[ModelFigures, ...]

    @property
    def margin(self) -> int:
        """Revenue − GPU cost (each model's margin is its own; their sum may differ from this
        by the rounding of each one's GPU cost, under a micro-dollar apiece)."""
        return self.revenue - self.gpu_cost


@dataclasses.dataclass(frozen=True, slots=True)
class DayFigures:
    """One UTC day of the chart; money in micro-dollars."""

    day: date
    revenue: int
    topups: int
    gpu_cost: int
    requests: int


@dataclasses.dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows, at ``at``; money in micro-dollars.

    ``windows`` in the order of :data:`WINDOWS`; ``days`` oldest first, today last;
    ``reserved`` and ``open_reservations`` are None when Redis was not asked.
    """

    at: datetime
    windows: tuple[WindowFigures, ...]
    days: tuple[DayFigures, ...]
    liability: int
    reserved: int | None
    open_reservations: int | None

    def window(self, name: str) -> WindowFigures:
        """The window called ``name`` (``today``, ``7d`` or ``30d``)."""
        return next(w for w in self.windows if w.name == name)


@dataclasses.dataclass(slots=True)
class _Tally:
    """Sums of one day and model, or of several (:meth:`add`); GPU cost in cost units."""

    revenue: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    client_errors: int = 0
    server_errors: int = 0
    gpu_units: int = 0

    def add(self, other: _Tally) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


async def overview(now: datetime | None = None, store: HotStore | None = None) -> Overview:
    """The overview at ``now``.

    The node runs are first brought in line with the nodes
    (:func:`edge.fleet.nodes.reconcile_runs`), so that a node removed or changed by a bulk
    update since is not counted on.

    Parameters:
      now: when the windows end (aware; default: now).
      store: the hot store, for what is reserved now (None: not asked).
    """
    at = (now or datetime.now(UTC)).astimezone(UTC)
    await reconcile_runs(at)
    days = Days.ending(at, SERIES_DAYS)
    tallies = await _usage(days)
    units = await gpu_units(days)
    rows = await LLM.filter(id__in={model_id for _day, model_id in units}).values_list(
        "id", "name")
    names = dict(cast(list[tuple[int, str]], rows))
    for (day, model_id), cost in units.items():
        tallies[day, names.get(model_id, f"model {model_id}")].gpu_units += cost
    ledger = await _ledger(days)
    opened, held = await reserved_credit(store) if store is not None else (None, None)
    return Overview(
        at=at, windows=tuple(_window(name, count, days, tallies, ledger)
                             for name, count in WINDOWS),
        days=tuple(_day(day, tallies, ledger) for day in days.dates),
        liability=await outstanding_balances(), reserved=held, open_reservations=opened)


async def _usage(days: Days) -> defaultdict[tuple[date, str], _Tally]:
    """SQL's sums of the usage rows by day and model (grouped by status too, for errors)."""
    rows = await (UsageRecord.filter(**days.within("created_at"))
                  .annotate(day=days.label_of("created_at"))
                  .annotate(n=Count("id"), pt=Sum("prompt_tokens"), ct=Sum("completion_tokens"),
                            cu=Sum("cost"))
                  .group_by("day", "model", "status")
                  .values("day", "model", "status", "n", "pt", "ct", "cu"))
    tallies: defaultdict[tuple[date, str], _Tally] = defaultdict(_Tally)
    for row in rows:
        count, status = int(row["n"]), int(row["status"])
        tallies[date.fromisoformat(row["day"]), row["model"]].add(_Tally(
            revenue=int(row["cu"] or 0), requests=count, prompt_tokens=int(row["pt"] or 0),
            completion_tokens=int(row["ct"] or 0),
            client_errors=count if 400 <= status < 500 else 0,
            server_errors=count if status >= 500 else 0))
    return tallies


async def _ledger(days: Days) -> dict[tuple[date, str], int]:
    """SQL's sums of the top-up, refund and adjustment rows, by day and kind."""
    rows = await (LedgerEntry.filter(kind__in=_CREDIT_KINDS, **days.within("created_at"))
                  .annotate(day=days.label_of("created_at"))
                  .annotate(total=Sum("amount"))
                  .group_by("day", "kind").values("day", "kind", "total"))
    return {(date.fromisoformat(row["day"]), str(row["kind"])): int(row["total"] or 0)
            for row in rows}


def _window(name: str, count: int, days: Days, tallies: dict[tuple[date, str], _Tally],
            ledger: dict[tuple[date, str], int]) -> WindowFigures:
    chosen = set(days.dates[-count:])
    by_model: defaultdict[str, _Tally] = defaultdict(_Tally)
    for (day, model), tally in tallies.items():
        if day in chosen:
            by_model[model].add(tally)
    total = _Tally()
    for tally in by_model.values():
        total.add(tally)

    def credits(kind: LedgerKind) -> int:
        return sum(v for (day, k), v in ledger.items() if day in chosen and k == kind)

    models = sorted((ModelFigures(model, t.revenue, micros(t.gpu_units), t.requests,
                                  t.prompt_tokens, t.completion_tokens)
                     for model, t in by_model.items()), key=lambda m: (-m.revenue, m.model))
    return WindowFigures(
        name=name, start=days.starts[-count], end=days.end, revenue=total.revenue,
        topups=credits(LedgerKind.TOPUP), refunds=-credits(LedgerKind.REFUND),
        adjustments=credits(LedgerKind.ADJUSTMENT), gpu_cost=micros(total.gpu_units),
        requests=total.requests, prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens, client_errors=total.client_errors,
        server_errors=total.server_errors, models=tuple(models))


def _day(day: date, tallies: dict[tuple[date, str], _Tally],
         ledger: dict[tuple[date, str], int]) -> DayFigures:
    total = _Tally()
    for (when, _model), tally in tallies.items():
        if when == day:
            total.add(tally)
    return DayFigures(day=day, revenue=total.revenue, topups=ledger.get((day, LedgerKind.TOPUP), 0),
                      gpu_cost=micros(total.gpu_units), requests=total.requests)
