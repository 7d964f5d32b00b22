"""What one-shot commands share: settings, the database, and Redis when one runs."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tortoise.exceptions import OperationalError

from edge.billing.heal import HotStale, HotWatch
from edge.db import DatabaseUnavailable, close_database, missing_table, open_database
from edge.errors import APIError
from edge.settings import Settings
from edge.store.embedded import NoRedis, redis_for_database, resolve_redis
from edge.store.hotstore import HotStore, RedisUnavailable, connect_redis

__all__ = ["CommandContext", "fail", "print_table", "run_command", "usd_argument"]


class CommandFailed(Exception):
    """A command cannot do what it was asked; the message says why."""


def fail(message: str) -> CommandFailed:
    return CommandFailed(message)


class CommandContext:
    def __init__(self, settings: Settings, store: HotStore | None) -> None:
        self.settings = settings
        self.store = store

    async def publish(self, event: str) -> None:
        if self.store is not None:
            await self.store.publish(event)

    async def audit(self, action: str, target: str, before: Any = None,
                    after: Any = None) -> None:
        """Append what the command changed to the audit log (actor ``cli``)."""
        from edge import audit

        await audit.record(audit.CLI, action, target, before, after)


def run_command(body: Callable[[CommandContext], Awaitable[int | None]], *,
                needs_redis: bool = False, claim: bool = True) -> int:
    """Run ``body`` with the database open and Redis connected if one answers.

    Parameters:
      needs_redis: start an embedded Redis for the command if none answers.
      claim: use only a Redis namespace this database may claim (not for
        ``ledger reset-hot``, which hands a namespace over).
    """
    settings = Settings.from_env()
    try:
        resolved = redis_for_database(settings, start=needs_redis) if claim \
            else resolve_redis(settings, start=needs_redis)
    except (NoRedis, DatabaseUnavailable) as exc:
        print(f"portal: {exc}", file=sys.stderr)
        return 1
    url = resolved.url
    if url:  # the embedded server `portal dev` runs, found in the data dir
        settings = settings.replace(redis_url=url)

    async def run() -> int:
        store = HotStore(connect_redis(url, checked_for=settings.redis_namespace),
                         settings.redis_namespace) if url else None
        await open_database(settings.effective_database_url)
        if url and store is not None and claim:
            # No server may be running to heal a new or lost namespace: do it here.
            raw = HotStore(connect_redis(url, pool_size=2), settings.redis_namespace)
            try:
                await HotWatch(raw).ensure(timeout=15)
            finally:
                await raw.close()
        try:
            return int(await body(CommandContext(settings, store)) or 0)
        finally:
            await close_database()
            if store is not None:
                await store.close()

    try:
        return asyncio.run(run())
    except CommandFailed as exc:
        print(f"portal: {exc}", file=sys.stderr)
        return 1
    except APIError as exc:  # the hot store is healing, a limit, ...
        print(f"portal: {exc.message}", file=sys.stderr)
        return 1
    except (*RedisUnavailable, HotStale) as exc:
        print(f"portal: Redis did not answer ({exc}); a change it did not confirm applies "
              "at most once, and reaches the database by itself if it did", file=sys.stderr)
        return 1
    except OperationalError as exc:
        if missing_table(exc):
            print("portal: the database has no tables yet; run `portal migrate` first",
                  file=sys.stderr)
            return 1
        raise
    finally:
        resolved.close()


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *,
                as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(list(rows), indent=2, default=str))
        return
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def usd_argument(text: str) -> int:
    """``argparse`` type: a non-negative dollar amount, as micro-dollars."""
    import argparse

    from edge.billing.money import parse_usd

    try:
        micros = parse_usd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if micros < 0:
        raise argparse.ArgumentTypeError("an amount of dollars cannot be negative")
    return micros
