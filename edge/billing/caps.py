"""Credit caps: how much one key may spend in a window, however its account is funded.

A cap lives beside the balance in ``reserve.lua`` (``$ns:cap:<key_id>``): the
reservation takes the worst case from the cap's room in the same atomic step that
takes it from the balance, so no number of racing requests can exceed it, and
``settle.lua`` gives back what the request did not spend. Windows are UTC calendar
days, ISO weeks (from Monday) and months, or the key's whole life.

A window Redis does not hold (a new cap, a Redis that lost its state and healed) is
loaded from SQL's usage rows: what the key was charged since the window began.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from edge.db.models import CapReset
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["cap_window", "load_cap_window", "rebuild_cap_windows", "used_in_window",
           "window_start"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(reset: str, now: datetime) -> datetime | None:
    """When the window holding ``now`` began (UTC), or None for ``never``."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == CapReset.DAILY:
        return day
    if reset == CapReset.WEEKLY:
        return day - timedelta(days=day.weekday())
    if reset == CapReset.MONTHLY:
        return day.replace(day=1)
    return None


def cap_window(reset: str, now: datetime) -> str:
    """The id of the window holding ``now``: equal ids, the same window."""
    start = window_start(reset, now)
    if start is None:
        return "n"
    if reset == CapReset.MONTHLY:
        return f"m{start.year:04d}{start.month:02d}"
    return f"{reset[0]}{(start - _EPOCH).days}"


async def charged_in_window(key_id: int, reset: str, now: datetime) -> int:
    """Micro-dollars SQL's usage rows charged the key in the window holding ``now``."""
    from tortoise.functions import Sum

    from edge.db.models import UsageRecord

    query = UsageRecord.filter(key_id=key_id)
    start = window_start(reset, now)
    if start is not None:
        query = query.filter(created_at__gte=start)
    rows = cast(list[Any], await query.annotate(total=Sum("cost")).values_list("total",
                                                                                 flat=True))
    return int(rows[0] or 0) if rows else 0


async def used_in_window(store: HotStore, key_id: int, reset: str) -> int:
    """Micro-dollars the key charged and holds in its cap's current window (Redis's live
    count; 0 when Redis holds another window or none)."""
    window, used = await store.client.hmget(store.cap(key_id), "w", "used")
    current = cap_window(reset, datetime.now(UTC))
    return int(used) if used is not None and window is not None and \
        text(window) == current else 0


async def load_cap_window(store: HotStore, key_id: int, reset: str, now: datetime) -> None:
    """Seed Redis with what the key was charged in the current window, from SQL.

    Only when Redis has no window for the key: one it holds is newer than SQL (it
    counts open reservations and charges the ledger writer has not copied yet).
    """
    used = await charged_in_window(key_id, reset, now)
    name = store.cap(key_id)
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.hsetnx(name, "w", cap_window(reset, now))
        pipe.hsetnx(name, "used", used)
        await pipe.execute()


async def rebuild_cap_windows(store: HotStore, held: dict[tuple[int, str], int]) -> None:
    """The heal's part: every capped key's window from SQL plus what open reservations hold.

    Run once the ledger stream is drained into SQL. ``held``: micro-dollars the kept
    reservations hold, by key and the window they were made in. A reservation of a
    window that has ended no longer counts anywhere (as in ``settle.lua``).
    """
    from edge.db.models import ApiKey

    now = datetime.now(UTC)
    from edge.store import keys

    async for name in store.client.scan_iter(match=keys.cap(store.ns, "*"), count=500):
        await store.client.delete(name)
    for key_id, reset in await ApiKey.filter(cap__isnull=False).values_list("id", "cap_reset"):
        window = cap_window(reset, now)
        used = await charged_in_window(key_id, reset, now) + held.get((key_id, window), 0)
        await store.client.hset(store.cap(key_id), mapping={"w": window, "used": used})
