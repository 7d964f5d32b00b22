"""``portal migrate``: bring the database schema up to date."""

from __future__ import annotations

import argparse
import asyncio

from edge.db import migrate
from edge.settings import Settings

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("migrate", help="apply database migrations")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    for name in asyncio.run(migrate(settings.effective_database_url)):
        print(f"applied {name}")  # playbooks report a change when they see this
    print("database is up to date")
    return 0
