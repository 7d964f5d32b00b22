"""Database set-up: one Tortoise configuration, opened and closed by its owner.

SQLite is the default (WAL, with a busy timeout so that several edge workers can
write); PostgreSQL is used when ``PORTAL_DATABASE_URL`` says so.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tortoise import Tortoise
from tortoise.connection import get_connection
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError

__all__ = ["DatabaseUnavailable", "close_database", "dialect", "has_key_prefixes",
           "installation_identity", "migrate", "missing_table", "open_database", "read_identity",
           "tortoise_config"]

T = TypeVar("T")


class DatabaseUnavailable(RuntimeError):
    """The database does not answer (commands say so instead of a traceback)."""


#: Tortoise app label of every model.
APP_LABEL = "portal"

#: Milliseconds a SQLite writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 15_000


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The Tortoise configuration dictionary for a database URL.

    SQLite gets a busy timeout (several processes write) and, in WAL mode,
    ``synchronous=NORMAL``: a crash of the application loses nothing, a power
    cut may lose the last commits (PostgreSQL is the production database).
    """
    url = database_url
    if url.startswith("sqlite://"):
        for pragma, value in (("busy_timeout", SQLITE_BUSY_TIMEOUT_MS), ("synchronous", "NORMAL")):
            if pragma not in url:
                url += ("&" if "?" in url else "?") + f"{pragma}={value}"
    return {
        "connections": {"default": url},
        "apps": {
            APP_LABEL: {
                "models": ["edge.db.models"],
                "default_connection": "default",
                "migrations": "edge.db.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def open_database(database_url: str) -> None:
    """Connect Tortoise for this process, reachable from every task."""
    _ensure_sqlite_dir(database_url)
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)


async def close_database() -> None:
    await Tortoise.close_connections()


async def migrate(database_url: str) -> list[str]:
    """Apply every pending migration (idempotent; safe to run on each start).

    Returns the names of the migrations applied now (empty: it was up to date).
    """
    from tortoise.migrations.api import migrate as run_migrations

    applied: list[str] = []

    def progress(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            applied.append(name)

    _ensure_sqlite_dir(database_url)
    try:
        await run_migrations(config=tortoise_config(_migration_url(database_url)),
                             progress=progress)
    finally:
        await Tortoise.close_connections()
    await open_database(database_url)
    try:
        await installation_identity()  # made once, so that every backup carries it
    finally:
        await close_database()
    return applied


def _migration_url(database_url: str) -> str:
    """SQLite migrates with foreign keys off, as Django does: Tortoise rebuilds a table to
    alter it (DROP, then re-create), and with them on, dropping ``api_keys`` would run the
    ON DELETE actions of every table that points at it (RESTRICT aborts, SET NULL wipes)."""
    if database_url.startswith("sqlite://") and "foreign_keys" not in database_url:
        return database_url + ("&" if "?" in database_url else "?") + "foreign_keys=OFF"
    return database_url


async def installation_identity() -> str:
    """This database's random identity, made on first use (by ``migrate``)."""
    from edge.db.models import Installation

    row = await Installation.get_or_none(id=1)
    if row is None:
        try:
            row = await Installation.create(id=1, identity=str(uuid.uuid4()))
        except IntegrityError:  # another process made it first
            row = await Installation.get(id=1)
    return row.identity


def missing_table(exc: OperationalError) -> bool:
    """Did a query fail because migrations have not made its table yet?"""
    return "no such table" in str(exc) or "does not exist" in str(exc)


def _run_on(database_url: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` with the database open, from outside an event loop.

    Raises:
      DatabaseUnavailable: the database does not answer.
    """
    async def run() -> T:
        await open_database(database_url)
        try:
            return await work()
        finally:
            await close_database()

    try:
        return asyncio.run(run())
    except (DBConnectionError, OSError) as exc:
        raise DatabaseUnavailable(f"the database does not answer: {exc}") from None


def has_key_prefixes(database_url: str, prefixes: list[str]) -> bool:
    """Does this database hold every API key of ``prefixes``? (outside an event loop)"""
    from edge.db.models import ApiKey

    wanted = set(prefixes)
    return _run_on(database_url, lambda: ApiKey.filter(prefix__in=wanted).count()) == len(wanted)


def read_identity(database_url: str) -> str | None:
    """:func:`installation_identity` from outside an event loop; None before migrations."""
    async def read() -> str | None:
        try:
            return await installation_identity()
        except OperationalError as exc:
            if missing_table(exc):
                return None
            raise

    return _run_on(database_url, read)


def dialect() -> str:
    """``"sqlite"`` or ``"postgres"``: the few raw SQL statements differ in placeholders."""
    return get_connection("default").capabilities.dialect


def _ensure_sqlite_dir(database_url: str) -> None:
    if database_url.startswith("sqlite://") and ":memory:" not in database_url:
        from pathlib import Path

        path = database_url.removeprefix("sqlite://").split("?", 1)[0]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
