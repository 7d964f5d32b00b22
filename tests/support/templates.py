"""Migrated databases to start from: migrating from nothing costs seconds, a copy milliseconds.

Applying every migration to an empty database takes Tortoise 2–3 s of CPU (it rebuilds
its model state once per migration), and the suite did that for every portal process it
started and for every test of the ``database`` fixture, on SQLite and on PostgreSQL.
Each template here is made once per test process by the real ``portal migrate`` (a child
of the warm CLI, so the test process's own Tortoise is never touched), then its
installation identity is deleted. A copy is then migrated again as before: that applies
nothing and makes the copy's own identity, so every copy is what a fresh database
migrated from nothing would be, identity included (test_redis_ownership.py relies on
two databases having two identities).

The migrations themselves are still applied from nothing where they are the subject:
tests/db/, ``portal dev`` (test_dev_quickstart.py), the converges of tests/ansible/.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

from tests.support.services import sql_query
from tests.support.warm_cli import run_portal

__all__ = ["copy_sqlite_template", "postgres_template_of", "sqlite_template"]

#: The table of ``edge.db.models.Installation`` (the database's identity, made by migrate).
IDENTITY_TABLE = "installation"

_lock = threading.Lock()
_made: dict[str, str] = {}


def _migrate(directory: Path, database_url: str) -> None:
    """``portal migrate`` on ``database_url`` (empty: SQLite in ``directory/data``)."""
    from tests.support.portal import PORTAL_BIN

    env = {**os.environ, "PORTAL_DATA_DIR": str(directory / "data"),
           "PORTAL_DATABASE_URL": database_url, "PORTAL_REDIS_URL": "redis://127.0.0.1:1/0",
           "PORTAL_EMBEDDED_REDIS": "never", "PORTAL_LOG_LEVEL": "WARNING"}
    done = run_portal(PORTAL_BIN, ["migrate"], env=env, cwd=directory, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"portal migrate of a template failed:\n{done.stdout}{done.stderr}")


def sqlite_template() -> Path:
    """A migrated SQLite file without an identity, made once per test process."""
    with _lock:
        if "sqlite" not in _made:
            directory = Path(tempfile.mkdtemp(prefix="portal-template-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _migrate(directory, "")
            path = directory / "data" / "portal.sqlite3"
            with sqlite3.connect(path) as db:
                db.execute(f"DELETE FROM {IDENTITY_TABLE}")
            db.close()  # the last connection: the WAL is checkpointed into the file
            leftovers = [p.name for p in path.parent.iterdir() if p != path]
            assert not leftovers, f"the template is more than one file: {leftovers}"
            _made["sqlite"] = str(path)
        return Path(_made["sqlite"])


def copy_sqlite_template(database: Path) -> None:
    """Put a copy of :func:`sqlite_template` at ``database`` (its directory is made)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template(), database)


def postgres_template_of(url: str) -> str:
    """Make the empty PostgreSQL database at ``url`` a template: migrated, without an
    identity (copy it with ``postgres_database(template=url)``). Returns ``url``."""
    directory = Path(tempfile.mkdtemp(prefix="portal-template-"))
    try:
        _migrate(directory, url)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    sql_query(url, f"DELETE FROM {IDENTITY_TABLE}")
    return url
