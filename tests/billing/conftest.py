"""Billing's in-process tests share the edge suite's migrated database (SQLite, PostgreSQL)."""

from tests.edge.conftest import database

__all__ = ["database"]
