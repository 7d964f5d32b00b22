"""The standard deployment, shared by a test module: a portal with 2 workers and a simnode.

Registered for every suite (``pytest_plugins`` in tests/conftest.py): ``deployment``
(module-scoped) and ``database`` (this process's database, SQLite and PostgreSQL).

The model is offered as ``m1`` but served by its node as ``sim-m1``, so every
test also proves the edge rewrites model names both ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from edge.billing.money import parse_usd, token_cost
from edge.db import close_database, migrate, open_database
from tests.support.deployment import Deployment
from tests.support.deployment import deploy as deployment_of
from tests.support.services import postgres_database
from tests.support.templates import copy_sqlite_template, postgres_template_of

__all__ = ["MODEL", "SERVED", "Deployment", "database", "deploy", "deployment", "expected_cost",
           "postgres_template"]

MODEL = "m1"
SERVED = "sim-m1"
INPUT_PRICE = "0.50"  # USD per 1M tokens
OUTPUT_PRICE = "1.50"
#: Tokens a simnode answers with when max_tokens allows it.
REPLY_TOKENS = 16


def expected_cost(prompt: int, completion: int) -> int:
    return token_cost(prompt, completion, parse_usd(INPUT_PRICE), parse_usd(OUTPUT_PRICE))


@contextmanager
def deploy(root: Path, redis_url: str, database_url: str = "",
           *node_args: str) -> Iterator[Deployment]:
    """A portal with 2 workers serving ``m1`` from one simnode (as ``sim-m1``)."""
    with deployment_of(root, redis_url, model=MODEL, served=SERVED, database_url=database_url,
                       node_args=("--reply-tokens", str(REPLY_TOKENS), *node_args),
                       input_price=INPUT_PRICE, output_price=OUTPUT_PRICE) as made:
        yield made


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory,
               redis_url: str) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("deployment"), redis_url) as made:
        yield made


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database without an identity, that ``database`` copies."""
    with postgres_database() as url:
        yield postgres_template_of(url)


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """This process's database, migrated and open, on SQLite and on PostgreSQL.

    It starts as a copy of a migrated template (tests/support/templates.py); ``migrate``
    then applies nothing and gives it its own identity, as on a fresh database.
    """
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    with ExitStack() as dropped:
        if request.param == "sqlite":
            path = tmp_path / "portal.sqlite3"
            copy_sqlite_template(path)
            url = f"sqlite://{path}"
        else:
            url = dropped.enter_context(
                postgres_database(template=request.getfixturevalue("postgres_template")))
        await migrate(url)
        await open_database(url)
        yield url
        await close_database()
        # Tortoise caches compiled INSERTs by table, not by dialect: one process, one database.
        EXECUTOR_CACHE.clear()
