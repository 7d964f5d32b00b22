"""A deployment through real processes: ``portal serve`` with workers, and a simnode it routes to.

``deploy(root, redis_url, model="m1", served="sim-m1")`` starts the node, migrates, adds
the model and its node, and serves; the suites' module-scoped fixtures wrap it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from simnode.testing import SimnodeProcess, start_simnode
from tests.support.portal import PortalServer
from tests.support.services import sql_query

__all__ = ["Deployment", "deploy"]


@dataclasses.dataclass
class Deployment:
    portal: PortalServer
    node: SimnodeProcess

    @property
    def url(self) -> str:
        return self.portal.url

    @property
    def database_url(self) -> str:
        return self.portal.env["PORTAL_DATABASE_URL"] or \
            f"sqlite://{self.portal.root / 'data' / 'portal.sqlite3'}"

    def key(self, credit: str = "10", **limits: int) -> tuple[int, str]:
        return self.portal.create_key(credit, **limits)

    def balance(self, key: str) -> int:
        """The live balance (Redis) as the API reports it."""
        response = httpx.get(self.url + "/v1/key", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        return response.json()["data"]["balance_micros"]

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Run a query on the portal's database (``?`` placeholders)."""
        return sql_query(self.database_url, query, *params)

    def wait_ledger(self, key_id: int, usage_rows: int, timeout: float = 10.0) -> None:
        """Wait until the writer has put ``usage_rows`` usage records in SQL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", key_id)[0][0] \
                    >= usage_rows:
                return
            time.sleep(0.05)
        raise TimeoutError("usage did not reach SQL")

    def assert_books_balance(self, key_id: int) -> int:
        """The SQL balance equals the sum of the ledger; returns it."""
        (balance,), = self.sql("SELECT a.balance FROM accounts a JOIN api_keys k "
                               "ON k.account_id = a.id WHERE k.id=?", key_id)
        (total,), = self.sql("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account_id = "
                             "(SELECT account_id FROM api_keys WHERE id=?)", key_id)
        assert balance == total
        assert balance >= 0
        return balance


@contextmanager
def deploy(root: Path, redis_url: str, *, model: str = "m1", served: str | None = None,
           node_args: Sequence[str] = (), database_url: str = "", workers: int = 2,
           env: dict[str, str] | None = None, input_price: str = "0.50",
           output_price: str = "1.50") -> Iterator[Deployment]:
    """A portal serving ``model`` from one simnode (serving it as ``served``).

    Parameters:
      root: directory of the portal's files.
      redis_url: the shared test Redis (the portal gets a namespace of its own).
      node_args: more ``python -m simnode`` options (``"--reply-tokens", "16"``).
      database_url: empty for SQLite in ``root``.
      workers: edge worker processes.
      env: more ``PORTAL_*`` settings.
      input_price, output_price: USD per 1M tokens.
    """
    served = served or model
    with start_simnode("--model", served, *node_args) as node:
        portal = PortalServer(root, redis_url, workers=workers, database_url=database_url,
                              env=env)
        portal.cli("migrate")
        portal.add_model(model, served_name=served, input_price=input_price,
                         output_price=output_price)
        portal.add_node(model, node.url)
        with portal:
            yield Deployment(portal, node)
