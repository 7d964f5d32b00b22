"""A deployment shared by a test module: a portal with 2 workers and simulated nodes.

The model is offered as ``m1`` but served by its node as ``sim-m1``, so every
test also proves the edge rewrites model names both ways.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from edge.billing.money import parse_usd, token_cost
from edge.db import close_database, migrate, open_database
from simnode.testing import SimnodeProcess, start_simnode
from tests.support.portal import PortalServer
from tests.support.services import sql_query

MODEL = "m1"
SERVED = "sim-m1"
INPUT_PRICE = "0.50"  # USD per 1M tokens
OUTPUT_PRICE = "1.50"
#: Tokens a simnode answers with when max_tokens allows it.
REPLY_TOKENS = 16


def expected_cost(prompt: int, completion: int) -> int:
    return token_cost(prompt, completion, parse_usd(INPUT_PRICE), parse_usd(OUTPUT_PRICE))


@dataclasses.dataclass
class Deployment:
    portal: PortalServer
    node: SimnodeProcess

    @property
    def url(self) -> str:
        return self.portal.url

    def key(self, credit: str = "10", **limits: int) -> tuple[int, str]:
        return self.portal.create_key(credit, **limits)

    def balance(self, key: str) -> int:
        """The live balance (Redis) as the API reports it."""
        response = httpx.get(self.url + "/v1/key", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        return response.json()["data"]["balance_micros"]

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Run a query on the portal's database (``?`` placeholders)."""
        url = self.portal.env["PORTAL_DATABASE_URL"] or \
            f"sqlite://{self.portal.root / 'data' / 'portal.sqlite3'}"
        return sql_query(url, query, *params)

    def wait_ledger(self, key_id: int, usage_rows: int, timeout: float = 10.0) -> None:
        """Wait until the writer has put ``usage_rows`` usage records in SQL."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", key_id)[0][0] \
                    >= usage_rows:
                return
            time.sleep(0.05)
        raise TimeoutError("usage did not reach SQL")

    def assert_books_balance(self, key_id: int) -> int:
        """The SQL balance equals the sum of the ledger; returns it."""
        (balance,), = self.sql("SELECT balance FROM api_keys WHERE id=?", key_id)
        (total,), = self.sql("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE key_id=?",
                             key_id)
        assert balance == total
        assert balance >= 0
        return balance


@contextmanager
def deploy(root: Path, redis_url: str, database_url: str = "",
           *node_args: str) -> Iterator[Deployment]:
    """A portal with 2 workers serving ``m1`` from one simnode."""
    with start_simnode("--model", SERVED, "--reply-tokens", str(REPLY_TOKENS),
                       *node_args) as node:
        portal = PortalServer(root, redis_url, workers=2, database_url=database_url)
        portal.cli("migrate")
        portal.add_model(MODEL, served_name=SERVED, input_price=INPUT_PRICE,
                         output_price=OUTPUT_PRICE)
        portal.add_node(MODEL, node.url)
        with portal:
            yield Deployment(portal, node)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory,
               redis_url: str) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("deployment"), redis_url) as made:
        yield made


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """This process's database, migrated and open, on SQLite and on PostgreSQL."""
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'portal.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    await migrate(url)
    await open_database(url)
    yield url
    await close_database()
    # Tortoise caches compiled INSERTs by table, not by dialect: one process, one database.
    EXECUTOR_CACHE.clear()
